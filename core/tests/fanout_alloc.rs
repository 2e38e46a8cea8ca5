//! Fan-out allocates nothing per subscriber (issue 9): a publication is encoded once and the same
//! bytes are queued for, and written to, every subscriber. Shown with a counting global allocator
//! over real loopback sessions, comparing one subscriber with a thousand.
//!
//! What is counted, and what is not:
//! - `publish_call_*`: the allocations made on the calling thread by [`ServerHandle::publish`]
//!   (encoding, metrics, the hub's pushes into every outbox).
//! - `delivery_*`: the allocations made on the server runtime's threads from the publication
//!   until every subscriber has received it (the sessions waking, draining their outbox and
//!   writing to their socket).
//!
//! Both are measured after a warm-up of a few publications: the first publication to a fresh
//! session grows that session's buffers (the outbox queue, the write batch, tungstenite's output
//! buffer) once, and those buffers are then reused. That growth is per session, not per
//! publication. The test only counts allocations; it asserts no timings.
//!
//! [`ServerHandle::publish`]: wsguard::ServerHandle::publish

// A counting allocator is an `unsafe impl GlobalAlloc` by definition; it only forwards to
// `System`. The workspace denies unsafe code, so this test file opts out explicitly.
#![allow(unsafe_code)]

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use support::{Connect, Setup, TestServer, WAIT, assert_frame, request};
use tokio::runtime::Runtime;
use tokio_tungstenite::tungstenite::Message;

/// Counts allocations (and reallocations) made on selected threads; frees are not counted.
struct CountingAllocator;

/// Allocations on the server runtime's threads while [`IS_MEASURING`] is set.
static SERVER_ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static IS_MEASURING: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Set on the server runtime's threads (by `on_thread_start`).
    static IS_SERVER_THREAD: Cell<bool> = const { Cell::new(false) };
    /// Set around the one call measured on the test's own thread.
    static IS_COUNTING_HERE: Cell<bool> = const { Cell::new(false) };
    static HERE_ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count_allocation() {
    // `try_with`: the allocator also runs while a thread's locals are torn down. These locals
    // are `const`-initialized `Cell`s without destructors, so reading them never allocates.
    if IS_COUNTING_HERE.try_with(Cell::get).unwrap_or(false) {
        let _ = HERE_ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }
    if IS_MEASURING.load(Ordering::Relaxed) && IS_SERVER_THREAD.try_with(Cell::get).unwrap_or(false) {
        SERVER_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to `System`, which upholds the `GlobalAlloc`
// contract; counting touches only atomics and `const` thread-locals, and never allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_allocation();
        // SAFETY: the caller's guarantees on `layout` are passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_allocation();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_allocation();
        // SAFETY: `ptr` was allocated by `System` (every allocation goes through it) with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// The counters are process-wide: the tests of this file take turns.
static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

const CHANNEL: &str = "room:1";
/// Publications before measuring, so every session's reusable buffers have grown.
const WARM_UP: usize = 4;
/// Publications measured.
const MEASURED: usize = 16;
/// How many allocations per publication one thousand subscribers may cost more than one: a small
/// constant for what the runtime may do now and then (a timer wheel level, a waker list), far
/// below the thousand a per-subscriber allocation would add.
const SLACK_PER_PUBLICATION: f64 = 8.0;

/// A server on its own runtime, whose threads are the ones counted, and `n` subscribers on
/// another runtime, each counting the publications it receives.
struct FanOut {
    server: Option<TestServer>,
    server_runtime: Option<Runtime>,
    /// Runs the subscribers' reading tasks; dropped last.
    _clients: Runtime,
    received: Arc<AtomicUsize>,
    n: usize,
}

impl FanOut {
    fn start(n: usize) -> FanOut {
        let server_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .on_thread_start(|| IS_SERVER_THREAD.with(|s| s.set(true)))
            .build()
            .expect("server runtime");
        let client_runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("client runtime");
        let setup = Setup::new()
            .server("max_connections = 5000")
            .limits("connections_per_ip = 5000")
            .limits("connections_per_user = 5000")
            .limits("handshakes_per_ip_per_sec = 100000.0")
            .limits("user_messages_per_sec = 1000000.0")
            .limits("outbound_queue_messages = 64");
        // `start` spawns the accept loop, and so every session, onto the server runtime.
        let server = server_runtime.block_on(setup.start());
        let received = Arc::new(AtomicUsize::new(0));
        let token = server.token("subscriber");
        client_runtime.block_on(async {
            // Connected a few dozen at a time: a thousand at once would only queue handshakes.
            let mut ready = futures_util::stream::iter(0..n)
                .map(|_| {
                    let connect = Connect::new().bearer(&token);
                    let server = &server;
                    async move {
                        let mut ws = server.ws(&connect).await;
                        let ack = request(&mut ws, &json!({"action": "subscribe", "id": 1, "channel": CHANNEL})).await;
                        assert_frame(&ack, &json!({"type": "ack", "id": 1}));
                        ws
                    }
                })
                .buffer_unordered(32);
            while let Some(mut ws) = ready.next().await {
                let received = Arc::clone(&received);
                tokio::spawn(async move {
                    while let Some(Ok(message)) = ws.next().await {
                        if matches!(message, Message::Text(_)) {
                            received.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        FanOut { server: Some(server), server_runtime: Some(server_runtime), _clients: client_runtime, received, n }
    }

    fn server(&self) -> &TestServer {
        self.server.as_ref().expect("running")
    }

    /// Publishes once from this thread; returns the sessions it was queued for.
    fn publish(&self, k: usize) -> usize {
        // Every publication the same size: a larger frame than any before grows a session's
        // output buffer once, which is not what this test is about.
        let payload = json!({"n": 1000 + k, "text": "the same bytes for every subscriber"});
        self.server().handle.publish(CHANNEL, &payload).expect("publish")
    }

    /// Waits until every subscriber has received `total` publications in all.
    fn wait_delivered(&self, total: usize) {
        let deadline = Instant::now() + WAIT;
        while self.received.load(Ordering::Relaxed) < self.n * total {
            assert!(
                Instant::now() < deadline,
                "only {} of {} deliveries arrived",
                self.received.load(Ordering::Relaxed),
                self.n * total
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Warms up, then publishes [`MEASURED`] times, one at a time (each delivered everywhere
    /// before the next, so every delivery wakes its session, the costly case for allocations).
    /// Returns the allocations per publication: (in the publish call, on the server's threads).
    fn measure(&self) -> (f64, f64) {
        for k in 0..WARM_UP {
            assert_eq!(self.publish(k), self.n, "every subscriber is queued");
            self.wait_delivered(k + 1);
        }
        let mut in_call = 0;
        SERVER_ALLOCATIONS.store(0, Ordering::Relaxed);
        IS_MEASURING.store(true, Ordering::Relaxed);
        for k in WARM_UP..WARM_UP + MEASURED {
            HERE_ALLOCATIONS.with(|n| n.set(0));
            IS_COUNTING_HERE.with(|c| c.set(true));
            let queued = self.publish(k);
            IS_COUNTING_HERE.with(|c| c.set(false));
            in_call += HERE_ALLOCATIONS.with(Cell::get);
            assert_eq!(queued, self.n, "every subscriber is queued");
            self.wait_delivered(k + 1);
        }
        IS_MEASURING.store(false, Ordering::Relaxed);
        let on_server = SERVER_ALLOCATIONS.load(Ordering::Relaxed);
        (in_call as f64 / MEASURED as f64, on_server as f64 / MEASURED as f64)
    }
}

impl Drop for FanOut {
    fn drop(&mut self) {
        // The server first (its handle shuts it down), then its runtime, then the clients'.
        drop(self.server.take());
        if let Some(runtime) = self.server_runtime.take() {
            runtime.shutdown_timeout(WAIT);
        }
    }
}

#[test]
fn publishing_to_a_thousand_subscribers_allocates_no_more_than_to_one() {
    let _turn = TURN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let one = FanOut::start(1);
    let (call_1, server_1) = one.measure();
    drop(one);
    let thousand = FanOut::start(1000);
    let (call_1000, server_1000) = thousand.measure();
    drop(thousand);
    let report = format!(
        "allocations per publication: publish call {call_1} (1 subscriber) vs {call_1000} (1000); \
         server threads {server_1} vs {server_1000}"
    );
    assert!(call_1000 - call_1 < SLACK_PER_PUBLICATION, "the publish call allocates per subscriber: {report}");
    assert!(server_1000 - server_1 < SLACK_PER_PUBLICATION, "delivery allocates per subscriber: {report}");
}
