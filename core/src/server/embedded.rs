//! `EmbeddedServer`: a server that owns its tokio runtime, for hosts that have none of their own
//! (the C ABI, Python, Node). The runtime belongs to the server object, not to the process: two
//! embedded servers never share threads, and dropping one stops it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

use super::{Server, ServerHandle};
use crate::auth::KeyMaterial;
use crate::config::Config;
use crate::error::Error;
use crate::hooks::Hooks;

/// A running server with its own runtime threads.
pub struct EmbeddedServer {
    runtime: Option<Runtime>,
    handle: ServerHandle,
    serving: Option<JoinHandle<Result<(), Error>>>,
}

impl EmbeddedServer {
    /// Binds and starts serving on its own runtime; returns once the listeners are bound.
    /// `worker_threads` overrides `server.worker_threads` when non-zero (0 in both: one per CPU).
    /// Blocking: call it off any async executor's thread.
    ///
    /// Errors: the same as [`crate::ServerBuilder::bind`], plus [`Error::Io`] when the runtime
    /// cannot start and [`Error::WrongThread`] on a server's own thread (a hook).
    pub fn start(
        config: Config,
        hooks: Arc<dyn Hooks>,
        key_material: Option<KeyMaterial>,
        worker_threads: usize,
    ) -> Result<Self, Error> {
        crate::host::refuse_on_server_thread("start")?;
        let threads = match (worker_threads, config.server.worker_threads) {
            (0, 0) => std::thread::available_parallelism().map_or(1, usize::from),
            (0, configured) => configured as usize,
            (given, _) => given,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("wsguard-worker")
            .enable_all()
            .build()
            .map_err(|e| Error::io("cannot start the server runtime", e))?;
        let mut builder = Server::builder(config).hooks(hooks);
        if let Some(material) = key_material {
            builder = builder.key_material(material);
        }
        let server = runtime.block_on(builder.bind())?;
        let handle = server.handle();
        let serving = runtime.spawn(server.serve());
        Ok(EmbeddedServer { runtime: Some(runtime), handle, serving: Some(serving) })
    }

    /// The control handle (publish, stats, disconnect, revoke).
    pub fn handle(&self) -> &ServerHandle {
        &self.handle
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    /// Stops accepting, closes every session with 1001 and waits up to `grace` (default:
    /// `server.shutdown_grace_secs`) for them to finish, then stops the runtime threads. Blocking;
    /// idempotent.
    ///
    /// Errors: [`Error::WrongThread`] on a server's own thread (a hook), where nothing changes:
    /// start the shutdown with [`ServerHandle::shutdown`] there instead.
    pub fn stop(&mut self, grace: Option<Duration>) -> Result<(), Error> {
        crate::host::refuse_on_server_thread("stop")?;
        let Some(runtime) = self.runtime.take() else { return Ok(()) };
        match grace {
            Some(grace) => self.handle.shutdown_within(grace),
            None => self.handle.shutdown(),
        }
        let result = match self.serving.take() {
            Some(serving) => runtime.block_on(serving).unwrap_or(Ok(())),
            None => Ok(()),
        };
        runtime.shutdown_timeout(Duration::from_secs(1));
        result
    }
}

impl Drop for EmbeddedServer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            self.handle.shutdown_within(Duration::ZERO);
            // Never block a host thread in a destructor.
            runtime.shutdown_background();
        }
    }
}
