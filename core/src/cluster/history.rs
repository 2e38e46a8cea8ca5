//! Channel history in the broker's Redis (`broker = "redis"`), so a client recovers on any node.
//!
//! Keys, per concrete channel, under `<channel_prefix>:h:<channel>`:
//! - `…:e` the epoch (a random string; a new one whenever this key is missing),
//! - `…:o` the last offset assigned in that epoch,
//! - `…:l` the log: a sorted set scored by offset, each member `<expiry ms>:<message frame>`.
//!
//! Every key carries the rule's `history_ttl_secs` as its TTL, renewed by each publication, and
//! the log is trimmed to `history_size` by the same script: that is what bounds Redis memory.
//!
//! Ordering across nodes: a publication is appended by one Lua script that checks the offset the
//! node encoded its frame with is the channel's next one (else it answers the current offset and
//! the node encodes again), stores the frame, trims, renews the TTLs and PUBLISHes the node's
//! envelope, all atomically. So the order of PUBLISH on the broker is the order of offsets, every
//! node (the publishing one included, which delivers its own history publications when they come
//! back) delivers them in offset order, and a subscription confirmed by Redis before a read gets
//! every publication after what the read saw.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::Script;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::BrokerError;
use super::redis::RedisStore;
use crate::history::{Position, Query, Retention, Slice};

/// At most this many channels' next offsets are remembered.
const MAX_OFFSET_GUESSES: usize = 10_000;
/// Append locks (see `RedisHistory::append_locks`).
const APPEND_LOCKS: usize = 64;
/// Most publications one read returns (Lua numbers are doubles; more than any `history_size`).
const MAX_READ: usize = 1 << 30;
/// How many times a publication is encoded again when other nodes took the offset it expected.
const MAX_APPEND_ATTEMPTS: usize = 32;

/// Creates the epoch when missing (dropping whatever was left of the log: its history is lost),
/// then appends ARGV[1] (the expected offset) with ARGV[2] (the member) if it is the next one.
/// Returns `{1, offset, epoch}` when appended, `{0, last offset, epoch}` when not.
const APPEND: &str = r"
local ttl = tonumber(ARGV[4])
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[5]
  redis.call('DEL', KEYS[2], KEYS[3])
  redis.call('SET', KEYS[1], epoch, 'EX', ttl)
end
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local expected = tonumber(ARGV[1])
if last + 1 ~= expected then
  return {0, last, epoch}
end
redis.call('SET', KEYS[2], expected, 'EX', ttl)
redis.call('ZADD', KEYS[3], expected, ARGV[2])
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -(tonumber(ARGV[3]) + 1))
redis.call('EXPIRE', KEYS[3], ttl)
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('PUBLISH', ARGV[6], ARGV[7])
return {1, expected, epoch}
";

/// Creates the epoch when missing (ARGV[1], TTL ARGV[2]), drops expired entries from the oldest
/// end, and reads: after ARGV[3] oldest first, or before ARGV[4] newest first (ARGV[6] = 1), at
/// most ARGV[5]. Returns `{epoch, last offset, oldest retained or -1, offset, member, ...}`.
const READ: &str = r"
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2], KEYS[3])
  redis.call('SET', KEYS[1], epoch, 'EX', tonumber(ARGV[2]))
end
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
while true do
  local first = redis.call('ZRANGE', KEYS[3], 0, 0)
  if #first == 0 then break end
  local expiry = tonumber(string.match(first[1], '^(%d+):'))
  if expiry and expiry > now then break end
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, 0)
end
local oldest = -1
local head = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
if #head > 0 then oldest = tonumber(head[2]) end
local out = {epoch, last, oldest}
local limit = tonumber(ARGV[5])
if limit > 0 then
  local found
  if ARGV[6] == '1' then
    local top = '+inf'
    if ARGV[4] ~= '' then top = '(' .. ARGV[4] end
    found = redis.call('ZREVRANGEBYSCORE', KEYS[3], top, '-inf', 'WITHSCORES', 'LIMIT', 0, limit)
  else
    local bottom = '-inf'
    if ARGV[3] ~= '' then bottom = '(' .. ARGV[3] end
    found = redis.call('ZRANGEBYSCORE', KEYS[3], bottom, '+inf', 'WITHSCORES', 'LIMIT', 0, limit)
  end
  for i = 1, #found, 2 do
    out[#out + 1] = tonumber(found[i + 1])
    out[#out + 1] = found[i]
  end
end
return out
";

/// The channels' logs in Redis, through the broker's Redis connection.
pub(crate) struct RedisHistory {
    store: Arc<RedisStore>,
    /// This node's appends to one channel run one at a time (channels share these by hash): the
    /// script's offset check then fails only when another node published in between.
    append_locks: Box<[tokio::sync::Mutex<()>]>,
    hasher: std::hash::RandomState,
    /// The next offset this node expects per channel (a guess that saves a round trip; the
    /// script decides). Bounded: cleared when full.
    next_offsets: Mutex<HashMap<String, u64>>,
    key_root: String,
    append: Script,
    read: Script,
}

fn new_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A TTL in whole seconds, at least 1 (Redis refuses 0).
fn ttl_secs(ttl: Duration) -> u64 {
    ttl.as_secs().max(1)
}

impl RedisHistory {
    pub(crate) fn new(store: Arc<RedisStore>, channel_prefix: &str) -> Self {
        RedisHistory {
            store,
            append_locks: (0..APPEND_LOCKS).map(|_| tokio::sync::Mutex::new(())).collect(),
            hasher: std::hash::RandomState::new(),
            next_offsets: Mutex::default(),
            key_root: format!("{channel_prefix}:h:"),
            append: Script::new(APPEND),
            read: Script::new(READ),
        }
    }

    fn keys(&self, channel: &str) -> [String; 3] {
        let root = format!("{}{channel}", self.key_root);
        [format!("{root}:e"), format!("{root}:o"), format!("{root}:l")]
    }

    /// Appends a publication: `encode` builds the frame for an offset and `seal` the broker
    /// envelope of that frame (published on `subject` by the same script), encoding again when
    /// another node took the offset it expected. Starts from the offset this node expects next. Returns the offset the publication got.
    pub(crate) async fn append(
        &self,
        channel: &str,
        retention: Retention,
        subject: &str,
        mut encode: impl FnMut(u64) -> Utf8Bytes,
        mut seal: impl FnMut(&Utf8Bytes) -> Vec<u8>,
    ) -> Result<u64, BrokerError> {
        use std::hash::BuildHasher;
        let keys = self.keys(channel);
        let ttl = ttl_secs(retention.ttl);
        let stripe = (self.hasher.hash_one(channel) % APPEND_LOCKS as u64) as usize;
        let _ordered = self.append_locks[stripe].lock().await;
        // Read under the lock: the previous append on this node has updated it.
        let mut expected =
            self.next_offsets.lock().unwrap_or_else(PoisonError::into_inner).get(channel).copied().unwrap_or(1);
        for _ in 0..MAX_APPEND_ATTEMPTS {
            let frame = encode(expected);
            let envelope = seal(&frame);
            let expiry_ms = super::now_ms() + retention.ttl.as_millis() as u64;
            let mut member = Vec::with_capacity(frame.len() + 21);
            member.extend_from_slice(expiry_ms.to_string().as_bytes());
            member.push(b':');
            member.extend_from_slice(frame.as_bytes());
            let mut invocation = self.append.prepare_invoke();
            invocation.key(&keys[0]).key(&keys[1]).key(&keys[2]);
            invocation
                .arg(expected)
                .arg(member)
                .arg(retention.size)
                .arg(ttl)
                .arg(new_epoch())
                .arg(subject)
                .arg(envelope);
            let (appended, offset, _epoch): (u8, u64, String) =
                self.store
                    .with_connection("history", |mut connection| async move {
                        invocation.invoke_async(&mut connection).await
                    })
                    .await?;
            if appended == 1 {
                let mut next = self.next_offsets.lock().unwrap_or_else(PoisonError::into_inner);
                if next.len() >= MAX_OFFSET_GUESSES && !next.contains_key(channel) {
                    next.clear();
                }
                next.insert(channel.to_string(), offset + 1);
                return Ok(offset);
            }
            expected = offset + 1;
        }
        Err(BrokerError::TimedOut("history append (offsets contended)"))
    }

    /// Reads `channel`'s log (creating its epoch when missing, with the TTL of `retention`).
    pub(crate) async fn read(&self, channel: &str, ttl: Duration, query: Query) -> Result<Slice, BrokerError> {
        let keys = self.keys(channel);
        let mut invocation = self.read.prepare_invoke();
        invocation.key(&keys[0]).key(&keys[1]).key(&keys[2]);
        invocation
            .arg(new_epoch())
            .arg(ttl_secs(ttl))
            .arg(query.after.map(|o| o.to_string()).unwrap_or_default())
            .arg(query.before.map(|o| o.to_string()).unwrap_or_default())
            .arg(query.limit.min(MAX_READ) as u64)
            .arg(if query.is_newest_first { "1" } else { "0" });
        let values: Vec<redis::Value> = self
            .store
            .with_connection("history", |mut connection| async move { invocation.invoke_async(&mut connection).await })
            .await?;
        parse_read(values).ok_or(BrokerError::TimedOut("history read (unexpected reply)"))
    }
}

fn parse_read(values: Vec<redis::Value>) -> Option<Slice> {
    use redis::FromRedisValue;
    let mut values = values.into_iter();
    let epoch = String::from_redis_value(values.next()?).ok()?;
    let last = u64::from_redis_value(values.next()?).ok()?;
    let oldest = i64::from_redis_value(values.next()?).ok()?;
    let mut publications = Vec::new();
    while let Some(offset) = values.next() {
        let offset = u64::from_redis_value(offset).ok()?;
        let member = Vec::<u8>::from_redis_value(values.next()?).ok()?;
        let at = member.iter().position(|b| *b == b':')?;
        let frame = String::from_utf8(member[at + 1..].to_vec()).ok()?;
        publications.push((offset, Utf8Bytes::from(frame)));
    }
    Some(Slice {
        position: Position { offset: last, epoch: Arc::from(epoch) },
        oldest: u64::try_from(oldest).ok(),
        publications,
    })
}
