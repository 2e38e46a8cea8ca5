// wsguard.hpp: a header-only C++17 RAII wrapper over include/wsguard.h.
//
// Ownership is carried by move-only types (Config, Server, RpcCall); failures throw
// wsguard::Error, which carries the stable wsg_result code and the library's detailed message.
// Hooks are a Handler subclass the server owns: its methods run on the server's threads,
// concurrently, and the trampolines below stop every exception at the C boundary (a throwing
// authenticate/authorize denies, a throwing rpc fails the call).
#pragma once

#include <wsguard.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace wsguard {

/// A failed wsg_* call: code() is the stable number, name() its snake_case name.
class Error : public std::runtime_error {
public:
    Error(wsg_result code, const std::string &message)
        : std::runtime_error(message.empty() ? std::string(wsg_result_name(code)) : message), code_(code) {}
    wsg_result code() const noexcept { return code_; }
    const char *name() const noexcept { return wsg_result_name(code_); }

private:
    wsg_result code_;
};

namespace detail {

inline std::string last_error_message() {
    std::string message(wsg_last_error_length() + 1, '\0');
    size_t written = 0;
    if (wsg_last_error_message(message.data(), message.size(), &written) != WSG_OK) return {};
    message.resize(written);
    return message;
}

inline void check(wsg_result result) {
    if (result != WSG_OK) throw Error(result, last_error_message());
}

inline std::string_view view(wsg_str s) noexcept {
    return s.data != nullptr ? std::string_view(s.data, s.len) : std::string_view();
}

struct FreeConfig {
    void operator()(wsg_config *c) const noexcept { wsg_config_free(c); }
};
struct FreeServer {
    void operator()(wsg_server *s) const noexcept { wsg_server_free(s); }
};
struct FreeCall {
    void operator()(wsg_rpc_call *c) const noexcept { wsg_rpc_call_free(c); }
};

}  // namespace detail

/// A parsed configuration (TOML or JSON), validated with the CLI's messages.
class Config {
public:
    static Config from_text(std::string_view text) {
        wsg_config *config = nullptr;
        detail::check(wsg_config_from_text(text.data(), text.size(), &config));
        return Config(config);
    }
    static Config from_file(std::string_view path) {
        wsg_config *config = nullptr;
        detail::check(wsg_config_from_file(path.data(), path.size(), &config));
        return Config(config);
    }
    /// Reads secrets, keys and certificates as `wsguard check-config` does.
    void check() const { detail::check(wsg_config_check(get())); }
    const wsg_config *get() const noexcept { return ptr_.get(); }

private:
    explicit Config(wsg_config *config) noexcept : ptr_(config) {}
    std::unique_ptr<wsg_config, detail::FreeConfig> ptr_;
};

/// One RPC call. Complete it once with respond() or fail(), on any thread; destroying it
/// uncompleted answers the client `rpc_failed`. Completions return WSG_HOOK_TIMEOUT (not an
/// exception) when the core's time box already answered: that is normal and harmless.
class RpcCall {
public:
    explicit RpcCall(wsg_rpc_call *call) noexcept : ptr_(call) {}
    std::string_view method() const noexcept { return detail::view(wsg_rpc_call_method(ptr_.get())); }
    std::string_view payload_json() const noexcept { return detail::view(wsg_rpc_call_payload_json(ptr_.get())); }
    std::string_view subject() const noexcept { return detail::view(wsg_rpc_call_subject(ptr_.get())); }
    std::string_view identity_json() const noexcept { return detail::view(wsg_rpc_call_identity_json(ptr_.get())); }
    std::uint64_t session_id() const noexcept { return wsg_rpc_call_session_id(ptr_.get()); }
    bool is_pending() const noexcept { return ptr_ != nullptr; }

    wsg_result respond(std::string_view json) noexcept {
        return wsg_rpc_call_respond(ptr_.release(), json.data(), json.size());
    }
    wsg_result fail(std::string_view message) noexcept {
        return wsg_rpc_call_fail(ptr_.release(), message.data(), message.size());
    }

private:
    std::unique_ptr<wsg_rpc_call, detail::FreeCall> ptr_;
};

/// The host's hooks. Override what you need; the defaults keep the core's decisions (an RPC
/// call dropped unanswered gets `rpc_failed`). Methods run on server threads, concurrently.
class Handler {
public:
    virtual ~Handler() = default;
    /// Return false to refuse; to change roles, scopes or claims, call
    /// `wsg_authenticate_answer_set_json(answer, ...)` with `{"roles": [...]}` and return true.
    virtual bool authenticate(const wsg_handshake &handshake, wsg_authenticate_answer *answer) {
        (void)handshake;
        (void)answer;
        return true;
    }
    virtual bool authorize(const wsg_authorize_request &request) {
        (void)request;
        return true;
    }
    virtual void rpc(RpcCall call) { (void)call; }
    virtual void on_event(std::string_view event_json) { (void)event_json; }
};

namespace detail {

inline void drop_handler(void *user_data) { delete static_cast<Handler *>(user_data); }

inline wsg_decision authenticate(void *user_data, const wsg_handshake *handshake, wsg_authenticate_answer *answer) {
    try {
        return static_cast<Handler *>(user_data)->authenticate(*handshake, answer) ? WSG_DECISION_ALLOW
                                                                                   : WSG_DECISION_DENY;
    } catch (...) {
        return WSG_DECISION_DENY;
    }
}

inline wsg_decision authorize(void *user_data, const wsg_authorize_request *request) {
    try {
        return static_cast<Handler *>(user_data)->authorize(*request) ? WSG_DECISION_ALLOW : WSG_DECISION_DENY;
    } catch (...) {
        return WSG_DECISION_DENY;
    }
}

inline void rpc(void *user_data, wsg_rpc_call *call) {
    RpcCall owned(call);
    try {
        static_cast<Handler *>(user_data)->rpc(std::move(owned));
    } catch (...) {
        // The call was moved into the handler; its destructor already failed it if unanswered.
    }
}

inline void event(void *user_data, const char *json, size_t len) {
    try {
        static_cast<Handler *>(user_data)->on_event(std::string_view(json, len));
    } catch (...) {
    }
}

}  // namespace detail

/// A running server on its own threads. Destroying it stops it at once (no grace): call stop()
/// first for a graceful drain.
class Server {
public:
    static Server start(const Config &config, std::unique_ptr<Handler> handler = nullptr) {
        wsg_hooks hooks{};
        if (handler) {
            hooks.user_data = handler.get();
            hooks.user_data_drop = detail::drop_handler;
            hooks.authenticate = detail::authenticate;
            hooks.authorize = detail::authorize;
            hooks.rpc = detail::rpc;
            hooks.event = detail::event;
        }
        wsg_server *server = nullptr;
        detail::check(wsg_server_start(config.get(), handler ? &hooks : nullptr, &server));
        handler.release();  // owned by the server from now on (freed through user_data_drop)
        return Server(server);
    }

    std::uint16_t local_port() const {
        std::uint16_t port = 0;
        detail::check(wsg_server_local_port(get(), &port));
        return port;
    }
    std::size_t publish(std::string_view channel, std::string_view json) const {
        std::size_t delivered = 0;
        detail::check(wsg_server_publish(get(), channel.data(), channel.size(), json.data(), json.size(), &delivered));
        return delivered;
    }
    void disconnect_session(std::uint64_t session_id) const {
        detail::check(wsg_server_disconnect_session(get(), session_id));
    }
    std::size_t disconnect_user(std::string_view user) const {
        std::size_t closed = 0;
        detail::check(wsg_server_disconnect_user(get(), user.data(), user.size(), &closed));
        return closed;
    }
    void revoke_jti(std::string_view jti) const { detail::check(wsg_server_revoke_jti(get(), jti.data(), jti.size())); }
    void revoke_sub(std::string_view sub) const { detail::check(wsg_server_revoke_sub(get(), sub.data(), sub.size())); }
    void revoke_issued_before(std::uint64_t unix_secs) const {
        detail::check(wsg_server_revoke_issued_before(get(), unix_secs));
    }
    std::string stats_json() const {
        char *json = nullptr;
        std::size_t len = 0;
        detail::check(wsg_server_stats_json(get(), &json, &len));
        std::string copy(json, len);
        wsg_string_free(json);
        return copy;
    }
    /// The bans in force as a JSON array of `{"target":{"kind","value"},"reason","remaining_secs"}`.
    std::string bans_json() const {
        char *json = nullptr;
        std::size_t len = 0;
        detail::check(wsg_server_bans_json(get(), &json, &len));
        std::string copy(json, len);
        wsg_string_free(json);
        return copy;
    }
    /// Bans an IP (text) for `secs` seconds; false when `abuse.exempt` covers it.
    bool ban_ip(std::string_view ip, double secs) const {
        bool applied = false;
        detail::check(wsg_server_ban_ip(get(), ip.data(), ip.size(), secs, &applied));
        return applied;
    }
    /// Bans a user (`sub`) for `secs` seconds.
    bool ban_user(std::string_view sub, double secs) const {
        bool applied = false;
        detail::check(wsg_server_ban_user(get(), sub.data(), sub.size(), secs, &applied));
        return applied;
    }
    /// Lifts an IP's ban; true when there was one.
    bool lift_ban_ip(std::string_view ip) const {
        bool lifted = false;
        detail::check(wsg_server_lift_ban_ip(get(), ip.data(), ip.size(), &lifted));
        return lifted;
    }
    /// Lifts a user's ban; true when there was one.
    bool lift_ban_user(std::string_view sub) const {
        bool lifted = false;
        detail::check(wsg_server_lift_ban_user(get(), sub.data(), sub.size(), &lifted));
        return lifted;
    }
    /// Applies a new configuration without dropping a connection; on any problem nothing changes
    /// and the Error's message lists every problem with its key path.
    void reload(const Config &config) const { detail::check(wsg_server_reload(get(), config.get())); }
    /// Graceful stop; a negative grace means `server.shutdown_grace_secs`. Blocking.
    void stop(double grace_secs = -1.0) { detail::check(wsg_server_stop(ptr_.get(), grace_secs)); }

private:
    explicit Server(wsg_server *server) noexcept : ptr_(server) {}
    const wsg_server *get() const noexcept { return ptr_.get(); }
    std::unique_ptr<wsg_server, detail::FreeServer> ptr_;
};

}  // namespace wsguard
