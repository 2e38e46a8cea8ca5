//! Turns one decoded client frame into its effect and its reply. Every refusal is an `error` reply
//! with a stable code, counted and reported as an event; the session stays open.

use std::sync::Arc;

use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::Session;
use crate::error::ErrorCode;
use crate::hooks::{AuthorizeRequest, ChannelAction, Decision, RpcCall, RpcError};
use crate::observe::Event;
use crate::protocol::{ClientFrame, ReplyError, ServerFrame, decode};

impl Session {
    /// Handles one text frame and returns the encoded reply.
    pub(crate) async fn handle_text(&mut self, text: &str) -> Utf8Bytes {
        let result = match decode(text, self.env.max_payload_depth) {
            Ok(frame) => self.dispatch(frame).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(reply) => reply,
            Err(error) => {
                self.env.stats.record_message_rejected();
                self.env.events.emit(Event::MessageRejected {
                    session_id: self.id,
                    user: self.identity.subject.clone(),
                    code: error.code.name(),
                });
                ServerFrame::Error { id: error.id, code: error.code.name(), message: &error.message }.encode()
            }
        }
    }

    async fn dispatch(&mut self, frame: ClientFrame) -> Result<Utf8Bytes, ReplyError> {
        match frame {
            ClientFrame::Ping { id } => Ok(ServerFrame::Pong { id }.encode()),
            ClientFrame::Subscribe { id, channel } => {
                if self.subscriptions.contains(&channel) {
                    return Ok(ServerFrame::Ack { id }.encode());
                }
                if self.subscriptions.len() >= self.env.max_subscriptions {
                    return Err(ReplyError::new(id, ErrorCode::TooManySubscriptions, "subscription limit reached"));
                }
                self.authorize(id, ChannelAction::Subscribe, &channel).await?;
                self.env.hub.subscribe(&channel, self.id, &self.outbox);
                self.subscriptions.insert(channel);
                Ok(ServerFrame::Ack { id }.encode())
            }
            ClientFrame::Unsubscribe { id, channel } => {
                if !self.subscriptions.remove(&channel) {
                    return Err(ReplyError::new(id, ErrorCode::NotSubscribed, "not subscribed to this channel"));
                }
                self.env.hub.unsubscribe(&channel, self.id);
                Ok(ServerFrame::Ack { id }.encode())
            }
            ClientFrame::Publish { id, channel, payload } => {
                self.authorize(id, ChannelAction::Publish, &channel).await?;
                let frame = ServerFrame::Message { channel: &channel, payload: &payload }.encode();
                self.env.hub.publish(&channel, &frame);
                Ok(ServerFrame::Ack { id }.encode())
            }
            ClientFrame::Rpc { id, method, payload } => {
                let call = RpcCall {
                    session_id: self.id,
                    identity: Arc::clone(&self.identity),
                    method,
                    payload: payload.into(),
                };
                match self.env.hooks.rpc(call).await {
                    Ok(Ok(value)) => Ok(ServerFrame::Result { id, payload: &value }.encode()),
                    Ok(Err(RpcError::UnknownMethod)) => Err(ReplyError::new(id, ErrorCode::UnknownMethod, "no handler for this method")),
                    Ok(Err(RpcError::Failed(message))) => Err(ReplyError::new(id, ErrorCode::RpcFailed, message)),
                    Err(failure) => Err(ReplyError::new(id, failure.code(), "the handler did not answer")),
                }
            }
        }
    }

    /// The host's `authorize` hook, failing closed.
    async fn authorize(&self, id: Option<u64>, action: ChannelAction, channel: &str) -> Result<(), ReplyError> {
        let request = AuthorizeRequest {
            session_id: self.id,
            identity: Arc::clone(&self.identity),
            action,
            channel: channel.to_string(),
        };
        match self.env.hooks.authorize(request).await {
            Ok(Decision::Allow) => Ok(()),
            Ok(Decision::Deny) => Err(ReplyError::new(id, ErrorCode::Forbidden, "not allowed on this channel")),
            Err(failure) if failure.code() == ErrorCode::HookTimeout => {
                Err(ReplyError::new(id, ErrorCode::HookTimeout, "authorization did not answer in time"))
            }
            Err(_) => Err(ReplyError::new(id, ErrorCode::Forbidden, "not allowed on this channel")),
        }
    }
}
