//! Turns one client frame into its effect and its replies. Every refusal is an `error` reply with
//! a stable code, counted, reported as an event and, for the codes the error registry marks as
//! violations (`ErrorCode::is_violation`), recorded as a violation; the session stays open until
//! the violations exceed the limit.

use std::sync::Arc;
use std::time::Duration;

use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::subscriptions::Origin;
use super::{Disconnect, Outcome, Session};
use crate::auth::{Identity, JtiRefusal, TokenError};
use crate::error::ErrorCode;
use crate::history::{GAP_POSITION_UNPROVEN, Joined, Recovery, Retention, SinceError};
use crate::hooks::{AuthorizeRequest, ChannelAction, Decision, RpcCall, RpcError};
use crate::observe::Event;
use crate::policy::{SlowConsumerPolicy, Verdict, check_schema};
use crate::protocol::{
    ClientFrame, DEFAULT_HISTORY_PAGE, MAX_HISTORY_PAGE, ReplyError, ServerFrame, Since, decode, encode_history_page,
};

/// What an allowed channel action carries on.
struct Allowed {
    slow_consumer: SlowConsumerPolicy,
    rule_id: Arc<str>,
    /// The publisher stamp (`from`) when the rule asks for one.
    from: Option<serde_json::Value>,
    /// What the channel keeps (the rule's history), if anything.
    history: Option<Retention>,
}

/// A refused frame: the reply plus what the logs and the client need besides.
struct Refusal {
    error: ReplyError,
    rule: Option<String>,
    retry_after: Option<Duration>,
    /// For `rate_limited`: which limit (a metrics label).
    scope: Option<&'static str>,
}

impl From<ReplyError> for Refusal {
    fn from(error: ReplyError) -> Self {
        Refusal { error, rule: None, retry_after: None, scope: None }
    }
}

fn refuse(id: Option<u64>, code: ErrorCode, message: impl Into<String>) -> Refusal {
    ReplyError::new(id, code, message).into()
}

fn rate_limited(id: Option<u64>, scope: &'static str, wait: Duration, rule: Option<String>) -> Refusal {
    Refusal {
        error: ReplyError::new(id, ErrorCode::RateLimited, format!("{} rate exceeded", scope.replace('_', " "))),
        scope: Some(scope),
        rule,
        retry_after: Some(wait),
    }
}

impl Session {
    /// Handles one text frame.
    pub(crate) async fn handle_text(&mut self, text: &str) -> Outcome {
        let result = match self.check_rates(text) {
            Ok(()) => match decode(text, self.env.limits.max_payload_depth) {
                Ok(frame) => {
                    self.env.stats.record_message_in(frame.action_name());
                    self.dispatch(frame).await
                }
                Err(e) => {
                    self.env.stats.record_message_in("invalid");
                    Err(e.into())
                }
            },
            Err(refusal) => {
                self.env.stats.record_message_in("rate_limited");
                Err(refusal)
            }
        };
        match result {
            Ok(frames) => Outcome { frames, disconnect: None },
            Err(refusal) => {
                let Refusal { error, rule, retry_after, scope } = refusal;
                if let Some(scope) = scope {
                    self.env.stats.record_rate_limited(scope);
                }
                self.env.stats.record_message_rejected(error.code.name());
                self.env.events.emit(Event::MessageRejected {
                    session_id: self.link.id,
                    user: self.identity.subject.clone(),
                    code: error.code.name(),
                    rule,
                });
                let frame = ServerFrame::Error {
                    id: error.id,
                    code: error.code.name(),
                    message: &error.message,
                    retry_after_ms: retry_after.map(|d| d.as_millis().max(1) as u64),
                }
                .encode();
                let disconnect =
                    (error.code.is_violation() && self.record_violation()).then_some(Disconnect::PolicyViolation);
                Outcome { frames: vec![frame], disconnect }
            }
        }
    }

    /// Connection, byte and user rates, before the frame is even parsed.
    fn check_rates(&self, text: &str) -> Result<(), Refusal> {
        let salvage = || serde_json::from_str::<IdOnly>(text).ok().and_then(|f| f.id);
        let size = u32::try_from(text.len()).unwrap_or(u32::MAX);
        if let Err(wait) = self.message_rate.check_n(1) {
            return Err(rate_limited(salvage(), "connection_messages", wait, None));
        }
        if let Err(wait) = self.byte_rate.check_n(size) {
            return Err(rate_limited(salvage(), "connection_bytes", wait, None));
        }
        if let Err(wait) = self.user_rate.check_n(1) {
            return Err(rate_limited(salvage(), "user", wait, None));
        }
        Ok(())
    }

    async fn dispatch(&mut self, frame: ClientFrame) -> Result<Vec<Utf8Bytes>, Refusal> {
        let id = frame.id();
        if self.env.protocol.require_seq {
            match frame.seq() {
                Some(seq) if self.last_seq.is_none_or(|last| seq > last) => self.last_seq = Some(seq),
                Some(_) => return Err(refuse(id, ErrorCode::Replay, "seq must increase strictly")),
                None => return Err(refuse(id, ErrorCode::Replay, "seq is required")),
            }
        }
        match frame {
            ClientFrame::Ping { .. } => Ok(vec![ServerFrame::Pong { id }.encode()]),
            ClientFrame::Subscribe { channel, since, proof, .. } => self.subscribe(id, channel, since, proof).await,
            ClientFrame::Unsubscribe { channel, .. } => {
                {
                    let mut subscriptions = self.link.subscriptions.lock();
                    if subscriptions.remove(&channel).is_none() {
                        return Err(refuse(id, ErrorCode::NotSubscribed, "not subscribed to this channel"));
                    }
                    self.env.hub.unsubscribe(&channel, self.link.id);
                }
                self.env.presence.leave(&channel, &self.identity.subject, self.link.id).await;
                Ok(vec![ServerFrame::Ack { id }.encode()])
            }
            ClientFrame::Publish { channel, payload, .. } => {
                let allowed =
                    self.authorize(id, &self.identity, ChannelAction::Publish, &channel, Some(&payload)).await?;
                let publication = self.env.cluster.publish(
                    &channel,
                    &payload,
                    allowed.from.as_ref(),
                    &allowed.rule_id,
                    allowed.history,
                );
                if let Err(why) = publication.confirmed().await {
                    return Err(refuse(id, why.code(), format!("{why}: delivered to subscribers on this node only")));
                }
                Ok(vec![ServerFrame::Ack { id }.encode()])
            }
            ClientFrame::Rpc { method, payload, .. } => self.rpc(id, method, payload).await,
            ClientFrame::History { channel, limit, since, is_newest_first, .. } => {
                self.history(id, &channel, limit, since.as_ref(), is_newest_first).await
            }
            ClientFrame::Refresh { token, .. } => self.refresh(id, &token).await,
            ClientFrame::Presence { channel, limit, after, .. } => {
                self.authorize_presence(id, &channel)?;
                let page = self
                    .env
                    .presence
                    .members(&channel, limit, after.as_deref())
                    .await
                    .map_err(|_| refuse(id, ErrorCode::PresenceUnavailable, "the presence store is unreachable"))?;
                let next = page.next.as_deref();
                Ok(vec![ServerFrame::Presence { id, channel: &channel, members: &page.members, next }.encode()])
            }
            ClientFrame::PresenceStats { channel, .. } => {
                self.authorize_presence(id, &channel)?;
                let stats = self
                    .env
                    .presence
                    .stats(&channel)
                    .await
                    .map_err(|_| refuse(id, ErrorCode::PresenceUnavailable, "the presence store is unreachable"))?;
                let (users, clients) = (stats.users, stats.clients);
                Ok(vec![ServerFrame::PresenceStats { id, channel: &channel, users, clients }.encode()])
            }
        }
    }

    /// The rule's `presence_access` (always enforced, see `Policy::decide_presence`). The
    /// `authorize` hook is not asked: it decides subscribe and publish only.
    fn authorize_presence(&self, id: Option<u64>, channel: &str) -> Result<(), Refusal> {
        let policy = self.env.policy.load();
        let (rule, reason) = match policy.decide_presence(&self.identity, channel) {
            Verdict::Allow(_) => return Ok(()),
            Verdict::Deny { rule, reason } => (rule, reason),
            Verdict::DryRunDeny { rule, reason } => (Some(rule), reason),
        };
        Err(Refusal {
            error: ReplyError::new(id, ErrorCode::Forbidden, "not allowed to see presence on this channel"),
            rule: Some(
                rule.map_or_else(
                    || format!("<none: {}>", reason.as_str()),
                    |r| format!("{} ({})", r.id, reason.as_str()),
                ),
            ),
            retry_after: None,
            scope: None,
        })
    }

    /// Policy (with the rule's payload schema and, for publishes, the channel rate), then the host's `authorize` hook,
    /// failing closed. Returns the matching rule's slow-consumer policy.
    async fn authorize(
        &self,
        id: Option<u64>,
        identity: &Arc<Identity>,
        action: ChannelAction,
        channel: &str,
        payload: Option<&serde_json::Value>,
    ) -> Result<Allowed, Refusal> {
        let policy = self.env.policy.load_full();
        let rule = match policy.decide(identity, action, channel) {
            Verdict::Allow(rule) => rule,
            Verdict::DryRunDeny { rule, reason } => {
                self.env.stats.record_dry_run_denial(&rule.id);
                self.env.events.emit(Event::PolicyDryRunDenied {
                    session_id: self.link.id,
                    user: identity.subject.clone(),
                    action,
                    rule: rule.id.to_string(),
                    reason: reason.as_str(),
                });
                rule
            }
            Verdict::Deny { rule, reason } => {
                return Err(Refusal {
                    error: ReplyError::new(id, ErrorCode::Forbidden, "not allowed on this channel"),
                    rule: Some(rule.map_or_else(
                        || format!("<none: {}>", reason.as_str()),
                        |r| format!("{} ({})", r.id, reason.as_str()),
                    )),
                    retry_after: None,
                    scope: None,
                });
            }
        };
        if let (Some(schema), Some(payload)) = (&rule.schema, payload.filter(|p| p.is_object())) {
            check_schema(schema, payload).map_err(|m| Refusal {
                error: ReplyError::new(id, ErrorCode::PayloadInvalid, m),
                rule: Some(rule.id.to_string()),
                retry_after: None,
                scope: None,
            })?;
        }
        if action == ChannelAction::Publish
            && let Some(rate) = &rule.publish_rate
        {
            rate.check(&channel.to_string())
                .map_err(|wait| rate_limited(id, "channel", wait, Some(rule.id.to_string())))?;
        }
        let from = if action == ChannelAction::Publish { rule.stamp(identity) } else { None };
        let allowed =
            Allowed { slow_consumer: rule.slow_consumer, rule_id: Arc::clone(&rule.id), from, history: rule.history };
        let request = || AuthorizeRequest {
            session_id: self.link.id,
            identity: Arc::clone(identity),
            action,
            channel: channel.to_string(),
        };
        match self.env.hooks.authorize(request, &self.link.info, payload).await {
            Ok(Decision::Allow) => Ok(allowed),
            Ok(Decision::Deny) => Err(refuse(id, ErrorCode::Forbidden, "not allowed on this channel")),
            Err(failure) if failure.code() == ErrorCode::HookTimeout => {
                Err(refuse(id, ErrorCode::HookTimeout, "authorization did not answer in time"))
            }
            Err(failure) if failure.code() == ErrorCode::ProxyUnavailable => {
                Err(refuse(id, ErrorCode::ProxyUnavailable, "authorization is unavailable"))
            }
            Err(_) => Err(refuse(id, ErrorCode::Forbidden, "not allowed on this channel")),
        }
    }

    /// `subscribe`: authorized, then joined to the fan-out. On a channel with history the join
    /// runs under the history's ordering lock, after reading what the client missed since
    /// `since`: the ack, then the missed publications (or a `gap`), go out as replies, before
    /// anything the outbox receives afterwards. A `since` is used only with a `proof` that this
    /// identity was subscribed from at most `since.offset` on (history/proof.rs); without one the
    /// subscription is made from now, with a `gap`.
    async fn subscribe(
        &mut self,
        id: Option<u64>,
        channel: String,
        since: Option<Since>,
        proof: Option<String>,
    ) -> Result<Vec<Utf8Bytes>, Refusal> {
        if self.link.subscriptions.lock().contains(&channel) {
            // Nothing changes and nothing is checked again; a `since` is not used (the live
            // subscription has delivered, or announced as a gap, everything since it started).
            return Ok(vec![self.already_subscribed(id, &channel).await?]);
        }
        if self.link.subscriptions.lock().len() >= self.env.limits.max_subscriptions {
            return Err(refuse(id, ErrorCode::TooManySubscriptions, "subscription limit reached"));
        }
        let allowed = self.authorize(id, &self.identity, ChannelAction::Subscribe, &channel, None).await?;
        if allowed.history.is_none() && since.is_some() {
            return Err(refuse(id, ErrorCode::HistoryNotKept, "this channel keeps no history to recover from"));
        }
        // Recovery gives back only what was published while this identity was subscribed.
        let is_unproven = since.as_ref().is_some_and(|since| {
            let start = proof.as_deref().and_then(|proof| {
                self.env.history.proofs().verify(proof, &self.identity.subject, &channel, &since.epoch)
            });
            start.is_none_or(|start| start > since.offset)
        });
        let joined = 'joined: {
            // Checked again under the lock: a server-side subscribe may have come first.
            let mut subscriptions = self.link.subscriptions.lock();
            if subscriptions.contains(&channel) {
                break 'joined Err(());
            }
            if subscriptions.len() >= self.env.limits.max_subscriptions {
                return Err(refuse(id, ErrorCode::TooManySubscriptions, "subscription limit reached"));
            }
            let is_shared = allowed.history.is_some() && self.env.cluster.has_shared_history();
            let joined = match allowed.history {
                None => {
                    self.env.hub.subscribe(&channel, self.link.id, &self.link.outbox, allowed.slow_consumer);
                    None
                }
                // Shared history: joined first, read below once the broker delivers the channel.
                Some(_) if is_shared => {
                    self.env.hub.subscribe(&channel, self.link.id, &self.link.outbox, allowed.slow_consumer);
                    None
                }
                Some(_) => Some(
                    self.env
                        .history
                        .join(&channel, since.as_ref(), || {
                            self.env.hub.subscribe(&channel, self.link.id, &self.link.outbox, allowed.slow_consumer);
                        })
                        .map_err(|_| {
                            refuse(
                                id,
                                ErrorCode::HistoryOffsetAhead,
                                "since.offset is beyond the channel's latest offset",
                            )
                        })?,
                ),
            };
            subscriptions.insert(&channel, Origin::Client);
            Ok(joined)
        };
        let Ok(joined) = joined else { return Ok(vec![self.already_subscribed(id, &channel).await?]) };
        // Acknowledged once the broker delivers the channel here (other nodes' messages).
        self.env.cluster.subscribed(&channel).await;
        let joined = match (joined, allowed.history) {
            (None, Some(retention)) if self.env.cluster.has_shared_history() => {
                Some(self.join_shared(id, &channel, since.as_ref(), retention).await?)
            }
            (joined, _) => joined,
        };
        // A member once acknowledged (a `presence` read after the ack shows the session).
        let policy = self.env.policy.load_full();
        if let Some(rule) = policy.presence_rule(&channel) {
            self.env.presence.join(&channel, &self.identity, self.link.id, rule).await;
        }
        let Some(Joined { position, mut recovery }) = joined else {
            return Ok(vec![ServerFrame::Ack { id }.encode()]);
        };
        // A replay needs the proof; a lost epoch or a trimmed range is a gap all the same.
        if is_unproven && matches!(recovery, Some(Recovery::Recovered(_))) {
            recovery = Some(Recovery::Lost(GAP_POSITION_UNPROVEN));
        }
        self.env.history.record_recovery(recovery.as_ref());
        let recovered = recovery.as_ref().map(|r| matches!(r, Recovery::Recovered(_)));
        // The subscription holds everything from the recovered position, or from now.
        let start = match (&recovery, &since) {
            (Some(Recovery::Recovered(_)), Some(since)) => since.offset,
            _ => position.offset,
        };
        let proof = self.env.history.proofs().issue(&self.identity.subject, &channel, &position.epoch, start);
        let mut frames = vec![
            ServerFrame::SubscribedAt { id, offset: position.offset, epoch: &position.epoch, recovered, proof: &proof }
                .encode(),
        ];
        match recovery {
            Some(Recovery::Recovered(missed)) => frames.extend(missed),
            Some(Recovery::Lost(reason)) => {
                frames.push(ServerFrame::Gap { channel: &channel, missed: None, reason: Some(reason) }.encode());
            }
            None => {}
        }
        Ok(frames)
    }

    /// A subscribe on a channel whose history is in Redis, already joined and confirmed by the
    /// broker: reads the position (and what the client missed since `since`), and has the outbox
    /// drop the live frames that read already covers. Every publication after the read reaches
    /// this node (PUBLISH is atomic with the offset, after the subscription), so nothing is
    /// missed and nothing is given twice. A refused `since` or an unreachable Redis undoes the
    /// subscription.
    async fn join_shared(
        &mut self,
        id: Option<u64>,
        channel: &str,
        since: Option<&Since>,
        retention: Retention,
    ) -> Result<Joined, Refusal> {
        let query = since.map_or(
            crate::history::Query { after: None, before: None, limit: 0, is_newest_first: false },
            crate::history::recovery_query,
        );
        let read = self.env.cluster.read_history(channel, retention.ttl, query).await;
        let joined = match (read, since) {
            (Some(Ok(slice)), Some(since)) => crate::history::recover(slice, since),
            (Some(Ok(slice)), None) => Ok(Joined { position: slice.position, recovery: None }),
            (Some(Err(e)), _) => {
                tracing::debug!(target: "wsguard::history", error = %e, "history read failed");
                Err(SinceError::EpochChanged)
            }
            (None, _) => Err(SinceError::EpochChanged),
        };
        match joined {
            Ok(joined) => {
                let through = match &joined.recovery {
                    Some(Recovery::Lost(_)) => None,
                    _ => Some(joined.position.offset),
                };
                self.link.outbox.skip_through(channel, through);
                Ok(joined)
            }
            Err(e) => {
                self.link.subscriptions.lock().remove(channel);
                self.env.hub.unsubscribe(channel, self.link.id);
                Err(match e {
                    SinceError::Ahead => {
                        refuse(id, ErrorCode::HistoryOffsetAhead, "since.offset is beyond the channel's latest offset")
                    }
                    SinceError::EpochChanged => {
                        refuse(id, ErrorCode::BrokerUnavailable, "the channel's history is unreachable")
                    }
                })
            }
        }
    }

    /// The `ack` of a `subscribe` to a channel the session is already subscribed to: with the
    /// channel's position when it keeps history.
    async fn already_subscribed(&self, id: Option<u64>, channel: &str) -> Result<Utf8Bytes, Refusal> {
        let retention = self.env.policy.load().retention(channel);
        let Some(retention) = retention else { return Ok(ServerFrame::Ack { id }.encode()) };
        let nothing = crate::history::Query { after: None, before: None, limit: 0, is_newest_first: false };
        let position = match self.env.cluster.read_history(channel, retention.ttl, nothing).await {
            None => self.env.history.position(channel),
            Some(Ok(slice)) => slice.position,
            Some(Err(_)) => {
                return Err(refuse(id, ErrorCode::BrokerUnavailable, "the channel's history is unreachable"));
            }
        };
        let proof = self.env.history.proofs().issue(&self.identity.subject, channel, &position.epoch, position.offset);
        Ok(ServerFrame::SubscribedAt {
            id,
            offset: position.offset,
            epoch: &position.epoch,
            recovered: None,
            proof: &proof,
        }
        .encode())
    }

    /// `history`: a page of the channel's kept publications, for identities the rule's `history`
    /// requirement admits.
    async fn history(
        &self,
        id: Option<u64>,
        channel: &str,
        limit: Option<i64>,
        since: Option<&Since>,
        is_newest_first: bool,
    ) -> Result<Vec<Utf8Bytes>, Refusal> {
        let limit = limit.unwrap_or(DEFAULT_HISTORY_PAGE);
        if !(1..=MAX_HISTORY_PAGE).contains(&limit) {
            return Err(refuse(id, ErrorCode::HistoryLimitInvalid, format!("limit must be 1 to {MAX_HISTORY_PAGE}")));
        }
        // Said before the permission check: it reveals the configuration (whether the first
        // matching rule keeps history), nothing about the identity or the channel's content.
        let retention = self.env.policy.load().retention(channel);
        let Some(retention) = retention else {
            return Err(refuse(id, ErrorCode::HistoryNotKept, "this channel keeps no history"));
        };
        self.authorize(id, &self.identity, ChannelAction::History, channel, None).await?;
        let query = crate::history::page_query(since, limit as usize, is_newest_first);
        let page = match self.env.cluster.read_history(channel, retention.ttl, query).await {
            None => self.env.history.page(channel, since, limit as usize, is_newest_first),
            Some(Ok(slice)) => crate::history::page_of(slice, since),
            Some(Err(_)) => {
                return Err(refuse(id, ErrorCode::BrokerUnavailable, "the channel's history is unreachable"));
            }
        };
        let page = page.map_err(|e| match e {
            SinceError::Ahead => {
                refuse(id, ErrorCode::HistoryOffsetAhead, "since.offset is beyond the channel's latest offset")
            }
            SinceError::EpochChanged => {
                refuse(id, ErrorCode::HistoryEpochChanged, "the channel's history was lost since that position")
            }
        })?;
        Ok(vec![encode_history_page(id, channel, page.position.offset, &page.position.epoch, &page.publications)])
    }

    async fn rpc(
        &self,
        id: Option<u64>,
        method: String,
        payload: serde_json::Value,
    ) -> Result<Vec<Utf8Bytes>, Refusal> {
        let policy = self.env.policy.load_full();
        let declared = policy.rpc(&self.identity, &method).map_err(|code| match code {
            ErrorCode::UnknownMethod => refuse(id, code, "no such method"),
            _ => refuse(id, code, "not allowed to call this method"),
        })?;
        if let Some(schema) = &declared.schema
            && payload.is_object()
        {
            check_schema(schema, &payload).map_err(|m| refuse(id, ErrorCode::PayloadInvalid, m))?;
        }
        let call = RpcCall { session_id: self.link.id, identity: Arc::clone(&self.identity), method, payload };
        match self.env.hooks.rpc(call, &self.link.info, self.env.limits.rpc_timeout).await {
            Ok(Ok(value)) => Ok(vec![ServerFrame::Result { id, payload: &value }.encode()]),
            // Declared in config but the host registered no handler: a host problem, not the
            // client's, so it must not count as a violation.
            Ok(Err(RpcError::UnknownMethod)) => Err(refuse(id, ErrorCode::RpcFailed, "no handler for this method")),
            Ok(Err(RpcError::Failed(message))) => Err(refuse(id, ErrorCode::RpcFailed, message)),
            Err(failure) => Err(refuse(id, failure.code(), "the handler did not answer")),
        }
    }

    /// Re-checks every client-made subscription for `identity` under the current rules (after a refresh or a
    /// reload); drops the ones no longer allowed and returns their `unsubscribed` frames.
    pub(crate) async fn reauthorize(&mut self, identity: &Arc<Identity>) -> Vec<Utf8Bytes> {
        let mut frames = Vec::new();
        // Server-made subscriptions are the trusted host's: no rule or hook re-checks them.
        let channels = self.link.subscriptions.lock().client_made();
        for channel in channels {
            if self.authorize(None, identity, ChannelAction::Subscribe, &channel, None).await.is_err() {
                // Gone already (a server-side unsubscribe while the hook ran): nothing to tell.
                let is_removed = {
                    let mut subscriptions = self.link.subscriptions.lock();
                    let is_removed = subscriptions.remove(&channel).is_some();
                    if is_removed {
                        self.env.hub.unsubscribe(&channel, self.link.id);
                    }
                    is_removed
                };
                if is_removed {
                    self.env.presence.leave(&channel, &identity.subject, self.link.id).await;
                    frames.push(ServerFrame::Unsubscribed { channel: &channel, reason: "forbidden" }.encode());
                }
            }
        }
        frames
    }

    /// In-band token refresh: verified like a handshake token, bound to the same subject and
    /// session-bound claims; every subscription is re-authorized under the new identity.
    async fn refresh(&mut self, id: Option<u64>, token: &str) -> Result<Vec<Utf8Bytes>, Refusal> {
        let verifier = self.env.verifier.load_full();
        let identity = verifier.verify_fetching(token).await.map_err(|e| refuse(id, e.code(), e.to_string()))?;
        if self.env.revocations.is_revoked(&identity) {
            return Err(refuse(id, ErrorCode::TokenRevoked, TokenError::Revoked.to_string()));
        }
        if identity.subject != self.identity.subject {
            return Err(refuse(id, ErrorCode::RefreshMismatch, "the new token has another subject"));
        }
        for claim in &self.env.session_bound_claims {
            if identity.claims.get(claim) != self.identity.claims.get(claim) {
                return Err(refuse(id, ErrorCode::RefreshMismatch, format!("the new token has another {claim:?}")));
            }
        }
        // The same hook as at the handshake: a refreshed identity is enriched the same way.
        let identity =
            self.env.hooks.authenticate(self.link.info.clone(), identity, Some(self.link.id)).await.map_err(
                |refusal| {
                    // The detail (a hook's deny reason, a backend's failure) is for operators only.
                    tracing::info!(
                        target: "wsguard::session",
                        session_id = self.link.id,
                        code = refusal.code().name(),
                        detail = %refusal,
                        "refresh refused by the authenticate hook or the backend proxy"
                    );
                    refuse(id, refusal.code(), refusal.code().description())
                },
            )?;
        // Spent last, so a refresh refused for any other reason leaves the token usable.
        if let Some(cache) = &self.env.jti_cache {
            cache.use_once(&identity).await.map_err(|refusal| match refusal {
                JtiRefusal::Token(e) => refuse(id, e.code(), e.to_string()),
                JtiRefusal::Full => refuse(id, ErrorCode::ReplayCacheFull, "used-jti cache full"),
                JtiRefusal::Unavailable => {
                    refuse(id, ErrorCode::JtiStoreUnavailable, "cluster used-jti store unreachable")
                }
            })?;
        }
        let identity = Arc::new(identity);
        let mut frames = self.reauthorize(&identity).await;
        self.set_identity(identity);
        frames.push(ServerFrame::Ack { id }.encode());
        Ok(frames)
    }
}

#[derive(serde::Deserialize)]
struct IdOnly {
    id: Option<u64>,
}
