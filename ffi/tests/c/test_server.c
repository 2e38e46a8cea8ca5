/*
 * The C side of the C ABI test: checks the config functions and the error conventions on its own,
 * then starts a server from TOML text with C hooks and obeys a line protocol driven by
 * ffi/tests/driver.py, which connects real WebSocket clients.
 *
 * Usage: test_server CONFIG.toml
 *
 * stdout (one line per message, written under a lock, flushed at once):
 *   ok NAME | not ok NAME: DETAIL      a check made here in C
 *   PORT N                             the server is listening
 *   event JSON                         one event from the event hook
 *   <reply to a command>               see handle_command()
 *   late_respond CODE NAME             an RPC completed after its time box
 *   config CODE NAME MESSAGE           a configuration loaded for the shared fixtures
 *   done passed=N failed=M             last line; exit status 0 when M == 0
 */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "wsguard.h"

/* ---- output and checks ------------------------------------------------------------------- */

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_int passed;
static atomic_int failed;

static void say(const char *format, ...) {
    va_list args;
    va_start(args, format);
    pthread_mutex_lock(&out_lock);
    vprintf(format, args);
    fputc('\n', stdout);
    fflush(stdout);
    pthread_mutex_unlock(&out_lock);
    va_end(args);
}

static void check(int condition, const char *name, const char *detail) {
    if (condition) {
        atomic_fetch_add(&passed, 1);
        say("ok %s", name);
    } else {
        atomic_fetch_add(&failed, 1);
        say("not ok %s: %s", name, detail ? detail : "");
    }
}

/* The calling thread's last error message, allocated; the caller frees it. */
static char *last_error(void) {
    size_t len = wsg_last_error_length();
    char *message = malloc(len + 1);
    size_t written = 0;
    if (message == NULL) return NULL;
    if (wsg_last_error_message(message, len + 1, &written) != WSG_OK || written != len) {
        free(message);
        return NULL;
    }
    return message;
}

static void sleep_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

static char *read_file(const char *path, size_t *len_out) {
    FILE *f = fopen(path, "rb");
    char *text = NULL;
    long size;
    if (f == NULL) return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
        text = malloc((size_t)size + 1);
        if (text != NULL && fread(text, 1, (size_t)size, f) == (size_t)size) {
            text[size] = '\0';
            *len_out = (size_t)size;
        } else {
            free(text);
            text = NULL;
        }
    }
    fclose(f);
    return text;
}

/* ---- part 1: configuration and conventions, no server ------------------------------------ */

static void check_config_errors(const char *config_path) {
    wsg_config *sentinel = (wsg_config *)&passed; /* any non-NULL value: must stay untouched */
    wsg_config *config = sentinel;
    char *message;

    const char *unknown = "[server]\nlisen = \"127.0.0.1:1\"\n[bogus]\nx = 1\n"
                          "[auth]\nhmac_secret_env = \"X\"\nissuer = \"i\"\naudience = \"a\"\n";
    wsg_result r = wsg_config_from_text(unknown, strlen(unknown), &config);
    check(r == WSG_CONFIG_INVALID, "bad_config_returns_config_invalid", wsg_result_name(r));
    check(r == 1002 && strcmp(wsg_result_name(r), "config_invalid") == 0, "config_invalid_is_1002",
          wsg_result_name(r));
    check(config == sentinel, "out_param_untouched_on_failure", "config_out was written");
    message = last_error();
    check(message != NULL && strstr(message, "invalid configuration (") == message &&
              strstr(message, "server.lisen: unknown key") != NULL &&
              strstr(message, "bogus: unknown key") != NULL,
          "bad_config_message_lists_key_paths", message ? message : "(no message)");
    free(message);

    const char *syntax = "[server\nlisten = 1\n";
    r = wsg_config_from_text(syntax, strlen(syntax), &config);
    message = last_error();
    check(r == WSG_CONFIG_SYNTAX && message != NULL && strstr(message, "line 1") != NULL,
          "syntax_error_is_config_syntax_with_line", message ? message : wsg_result_name(r));
    free(message);

    const char *missing = "/nonexistent/wsguard.toml";
    r = wsg_config_from_file(missing, strlen(missing), &config);
    check(r == WSG_CONFIG_FILE, "missing_file_is_config_file", wsg_result_name(r));

    const char bad_utf8[] = {'[', (char)0xff, ']'};
    r = wsg_config_from_text(bad_utf8, sizeof bad_utf8, &config);
    check(r == WSG_INVALID_UTF8, "non_utf8_text_is_invalid_utf8", wsg_result_name(r));
    r = wsg_config_from_text(NULL, 3, &config);
    check(r == WSG_NULL_ARGUMENT, "null_text_is_null_argument", wsg_result_name(r));
    r = wsg_config_from_text("{}", 2, NULL);
    check(r == WSG_NULL_ARGUMENT, "null_out_is_null_argument", wsg_result_name(r));
    check(config == sentinel, "out_param_untouched_after_all_failures", "config_out was written");

    /* Secrets are checked at construction, as in every host: an unset variable is refused here. */
    const char *unset = "{\"auth\":{\"hmac_secret_env\":\"WSGUARD_FFI_NEVER_SET\",\"issuer\":\"i\",\"audience\":\"a\"}}";
    r = wsg_config_from_text(unset, strlen(unset), &config);
    check(r == WSG_CONFIG_SECRET_MISSING && config == sentinel, "unset_secret_is_refused_at_construction",
          wsg_result_name(r));

    /* A success clears the thread's last error. */
    setenv("WSGUARD_FFI_TEST_SECRET", "c-test-secret-of-at-least-32-bytes-0123456789", 1);
    const char *json = "{\"auth\":{\"hmac_secret_env\":\"WSGUARD_FFI_TEST_SECRET\",\"issuer\":\"i\",\"audience\":\"a\"}}";
    r = wsg_config_from_text(json, strlen(json), &config);
    check(r == WSG_OK && config != sentinel && wsg_last_error_length() == 0,
          "json_text_parses_and_clears_last_error", wsg_result_name(r));
    if (r == WSG_OK) wsg_config_free(config);

    /* The file the server will use parses from a path too, and passes the environment checks. */
    r = wsg_config_from_file(config_path, strlen(config_path), &config);
    check(r == WSG_OK, "config_from_file", wsg_result_name(r));
    if (r == WSG_OK) {
        r = wsg_config_check(config);
        check(r == WSG_OK, "config_check_reads_secret_file", wsg_result_name(r));
        wsg_config_free(config);
    }

    /* Too small a buffer: nothing written, and the message itself is kept. */
    wsg_config_from_text(syntax, strlen(syntax), &config);
    char tiny[4] = "xyz";
    size_t written = 77;
    r = wsg_last_error_message(tiny, sizeof tiny, &written);
    check(r == WSG_INSUFFICIENT_BUFFER && written == 77 && strcmp(tiny, "xyz") == 0 &&
              wsg_last_error_length() > 0,
          "last_error_insufficient_buffer_writes_nothing", wsg_result_name(r));

    check(strcmp(wsg_result_name(WSG_OK), "ok") == 0 &&
              strcmp(wsg_result_name(WSG_NULL_ARGUMENT), "null_argument") == 0 &&
              strcmp(wsg_result_name(123456), "unknown") == 0,
          "result_names", wsg_result_name(WSG_NULL_ARGUMENT));
    check(strlen(wsg_version()) > 0, "version", wsg_version());

    /* Every _free(NULL) is a no-op. */
    wsg_config_free(NULL);
    wsg_server_free(NULL);
    wsg_rpc_call_free(NULL);
    wsg_string_free(NULL);
    check(1, "free_null_is_noop", NULL);
}

/* ---- hooks ------------------------------------------------------------------------------- */

typedef struct host_state {
    _Atomic(wsg_server *) server;
    atomic_int drops;
    atomic_int events;
    pthread_mutex_t threads_lock;
    pthread_t threads[32];
    int thread_count;
} host_state;

static void host_drop(void *user_data) {
    host_state *state = user_data;
    atomic_fetch_add(&state->drops, 1);
}

/* The answer set by the driver's `auth_answer JSON` command (tests/fixtures/authenticate_answers.json),
 * or NULL: then every verified token but mallory's is allowed as it is. */
static pthread_mutex_t answer_lock = PTHREAD_MUTEX_INITIALIZER;
static char *fixture_answer;

static void set_fixture_answer(const char *json) {
    pthread_mutex_lock(&answer_lock);
    free(fixture_answer);
    fixture_answer = json ? strdup(json) : NULL;
    pthread_mutex_unlock(&answer_lock);
}

static wsg_decision host_authenticate(void *user_data, const wsg_handshake *handshake,
                                      wsg_authenticate_answer *answer) {
    (void)user_data;
    /* A host-side ban list: the token of "mallory" verifies, but this host refuses her. */
    if (handshake->subject.len == 7 && memcmp(handshake->subject.data, "mallory", 7) == 0)
        return WSG_DECISION_DENY;
    pthread_mutex_lock(&answer_lock);
    if (fixture_answer != NULL) {
        /* An invalid answer is refused by the core (and this call returns WSG_INVALID_ARGUMENT). */
        wsg_authenticate_answer_set_json(answer, fixture_answer, strlen(fixture_answer));
    }
    pthread_mutex_unlock(&answer_lock);
    return WSG_DECISION_ALLOW;
}

static wsg_decision host_authorize(void *user_data, const wsg_authorize_request *request) {
    (void)user_data;
    if (strcmp(request->channel.data, "room:denied") == 0) return WSG_DECISION_DENY;
    return WSG_DECISION_ALLOW;
}

static void host_event(void *user_data, const char *event_json, size_t event_json_len) {
    host_state *state = user_data;
    atomic_fetch_add(&state->events, 1);
    say("event %.*s", (int)event_json_len, event_json);
}

/* {"echo":PAYLOAD,"method":"M","subject":"S","session_id":N}; the caller frees it. */
static char *echo_json(wsg_rpc_call *call, size_t *len_out) {
    wsg_str payload = wsg_rpc_call_payload_json(call);
    wsg_str method = wsg_rpc_call_method(call);
    wsg_str subject = wsg_rpc_call_subject(call);
    size_t size = payload.len + method.len + subject.len + 96;
    char *json = malloc(size);
    if (json == NULL) return NULL;
    int n = snprintf(json, size, "{\"echo\":%.*s,\"method\":\"%.*s\",\"subject\":\"%.*s\",\"session_id\":%llu}",
                     (int)payload.len, payload.data, (int)method.len, method.data, (int)subject.len,
                     subject.data, (unsigned long long)wsg_rpc_call_session_id(call));
    *len_out = n > 0 ? (size_t)n : 0;
    return json;
}

static void respond_echo(wsg_rpc_call *call, const char *label) {
    size_t len = 0;
    char *json = echo_json(call, &len);
    wsg_result r = json ? wsg_rpc_call_respond(call, json, len) : (wsg_rpc_call_free(call), WSG_OK);
    if (label != NULL) say("%s %u %s", label, r, wsg_result_name(r));
    free(json);
}

typedef struct later_job {
    wsg_rpc_call *call;
    long delay_ms;
    const char *label; /* printed with the result code of the completion, or NULL */
} later_job;

static void *later_main(void *arg) {
    later_job *job = arg;
    sleep_ms(job->delay_ms);
    respond_echo(job->call, job->label);
    free(job);
    return NULL;
}

/* Hands the call to a thread of our own, as a C++ service hands work to its pool. */
static void complete_later(host_state *state, wsg_rpc_call *call, long delay_ms, const char *label) {
    later_job *job = malloc(sizeof *job);
    if (job == NULL) {
        wsg_rpc_call_free(call);
        return;
    }
    job->call = call;
    job->delay_ms = delay_ms;
    job->label = label;
    pthread_mutex_lock(&state->threads_lock);
    if (state->thread_count < 32 && pthread_create(&state->threads[state->thread_count], NULL, later_main, job) == 0) {
        state->thread_count++;
    } else {
        wsg_rpc_call_free(call);
        free(job);
    }
    pthread_mutex_unlock(&state->threads_lock);
}

static int method_is(wsg_rpc_call *call, const char *name) {
    wsg_str method = wsg_rpc_call_method(call);
    return method.len == strlen(name) && memcmp(method.data, name, method.len) == 0;
}

static void host_rpc(void *user_data, wsg_rpc_call *call) {
    host_state *state = user_data;
    if (method_is(call, "echo")) {
        respond_echo(call, NULL);
    } else if (method_is(call, "echo_later")) {
        complete_later(state, call, 50, NULL);
    } else if (method_is(call, "too_late")) {
        /* limits.rpc_timeout_secs is 2 in the test config: this answer comes after the time box. */
        complete_later(state, call, 3500, "late_respond");
    } else if (method_is(call, "whoami")) {
        /* The identity the core handed over, as the shared fixtures read it back. */
        wsg_str identity = wsg_rpc_call_identity_json(call);
        wsg_rpc_call_respond(call, identity.data, identity.len);
    } else if (method_is(call, "fail")) {
        wsg_rpc_call_fail(call, "nope", 4);
    } else if (method_is(call, "drop")) {
        wsg_rpc_call_free(call);
    } else if (method_is(call, "bad_json")) {
        wsg_result r = wsg_rpc_call_respond(call, "{not json", 9);
        say("bad_json_respond %u %s", r, wsg_result_name(r));
    } else if (method_is(call, "stop_inside")) {
        /* Blocking calls are refused on the server's own threads instead of deadlocking. */
        wsg_result r = wsg_server_stop(atomic_load(&state->server), 1.0);
        char json[64];
        int n = snprintf(json, sizeof json, "{\"stop_result\":%u}", r);
        wsg_rpc_call_respond(call, json, (size_t)n);
    } else {
        wsg_rpc_call_fail(call, "no such method in the C host", 28);
    }
}

/* ---- part 2: the server, driven over stdin ----------------------------------------------- */

/* `reload_json CONFIG`: parses the text (one line of JSON) and reloads the server with it; replies
 * `reloaded CODE NAME MESSAGE`, the message on one line (its line breaks as " | "). */
static void reload_from_text(wsg_server *server, const char *text) {
    wsg_config *config = NULL;
    wsg_result r = wsg_config_from_text(text, strlen(text), &config);
    if (r == WSG_OK) {
        r = wsg_server_reload(server, config);
        wsg_config_free(config); /* the server keeps its own copy */
    }
    char *message = r == WSG_OK ? NULL : last_error();
    for (char *p = message; p != NULL && *p != '\0'; p++)
        if (*p == '\n') *p = '|';
    say("reloaded %u %s %s", r, wsg_result_name(r), message ? message : "");
    free(message);
}

/* `config_text_hex HEX` / `config_file PATH`: loads a configuration from text (hex-encoded, so
 * it may span lines) or a file, as a host would; replies `config CODE NAME MESSAGE`, the message on
 * one line. Drives tests/fixtures/config_errors.json. */
static void load_config_case(const char *verb, const char *arg) {
    wsg_config *config = NULL;
    wsg_result r;
    if (strcmp(verb, "config_file") == 0) {
        r = wsg_config_from_file(arg, strlen(arg), &config);
    } else {
        size_t len = strlen(arg) / 2;
        char *text = malloc(len + 1);
        if (text == NULL) return;
        for (size_t i = 0; i < len; i++) {
            unsigned byte = 0;
            sscanf(arg + 2 * i, "%2x", &byte);
            text[i] = (char)byte;
        }
        r = wsg_config_from_text(text, len, &config);
        free(text);
    }
    wsg_config_free(config);
    char *message = r == WSG_OK ? NULL : last_error();
    for (char *p = message; p != NULL && *p != '\0'; p++)
        if (*p == '\n') *p = '|';
    say("config %u %s %s", r, wsg_result_name(r), message ? message : "");
    free(message);
}

/* One command line from the driver; returns 0 after `stop`. */
static int handle_command(wsg_server *server, char *line) {
    char *newline = strchr(line, '\n');
    if (newline) *newline = '\0';
    if (strncmp(line, "reload_json ", 12) == 0) {
        /* The argument is the rest of the line, spaces included. */
        reload_from_text(server, line + 12);
        return 1;
    }
    if (strncmp(line, "auth_answer ", 12) == 0) {
        set_fixture_answer(line + 12);
        say("auth_answer_set");
        return 1;
    }
    char *verb = strtok(line, " ");
    char *arg1 = strtok(NULL, " ");
    char *rest = strtok(NULL, "");
    size_t count = 0;
    bool flag = false;
    wsg_result r;
    if (verb == NULL) return 1;
    if (strcmp(verb, "publish") == 0 && arg1 && rest) {
        r = wsg_server_publish(server, arg1, strlen(arg1), rest, strlen(rest), &count);
        say("published %u %zu %s", r, r == WSG_OK ? count : (size_t)0, wsg_result_name(r));
    } else if (strcmp(verb, "stats") == 0) {
        char *json = NULL;
        size_t len = 0;
        r = wsg_server_stats_json(server, &json, &len);
        say("stats %u %s", r, r == WSG_OK ? json : "{}");
        wsg_string_free(json);
    } else if (strcmp(verb, "disconnect_session") == 0 && arg1) {
        r = wsg_server_disconnect_session(server, strtoull(arg1, NULL, 10));
        say("disconnected_session %u %s", r, wsg_result_name(r));
    } else if (strcmp(verb, "disconnect_user") == 0 && arg1) {
        r = wsg_server_disconnect_user(server, arg1, strlen(arg1), &count);
        say("disconnected_user %u %zu", r, count);
    } else if (strncmp(verb, "op_", 3) == 0 && arg1 && rest) {
        /* op_{send,subscribe,unsubscribe,close}_{user,session,both,null} TARGET ARG: one server-side
         * session operation; `both` names the session and the user (refused), `null` passes no
         * target. For close, ARG is "CODE REASON...". */
        char *json = NULL;
        size_t len = 0;
        const char *kind = strrchr(verb, '_') + 1;
        wsg_target target = {0};
        if (strcmp(kind, "session") == 0 || strcmp(kind, "both") == 0) {
            target.has_session_id = true;
            target.session_id = strtoull(arg1, NULL, 10);
        }
        if (strcmp(kind, "user") == 0 || strcmp(kind, "both") == 0) {
            target.user = arg1;
            target.user_len = strlen(arg1);
        }
        const wsg_target *t = strcmp(kind, "null") == 0 ? NULL : &target;
        if (strncmp(verb, "op_send_", 8) == 0) {
            r = wsg_server_send(server, t, rest, strlen(rest), &json, &len);
        } else if (strncmp(verb, "op_subscribe_", 13) == 0) {
            r = wsg_server_subscribe(server, t, rest, strlen(rest), &json, &len);
        } else if (strncmp(verb, "op_unsubscribe_", 15) == 0) {
            r = wsg_server_unsubscribe(server, t, rest, strlen(rest), &json, NULL);
        } else {
            char *reason = strchr(rest, ' ');
            const char *text = reason ? reason + 1 : NULL;
            r = wsg_server_disconnect_with(server, t, (uint16_t)strtoul(rest, NULL, 10), text,
                                           text ? strlen(text) : 0, &json, &len);
        }
        check(r == WSG_OK ? (json != NULL && (len == 0 || strlen(json) == len)) : json == NULL,
              "session_operation_writes_its_result_only_on_success", verb);
        say("applied %u %s %s", r, wsg_result_name(r), r == WSG_OK ? json : "{}");
        wsg_string_free(json);
    } else if (strcmp(verb, "sessions") == 0 && arg1 && rest) {
        /* sessions USER|- LIMIT */
        char *json = NULL;
        bool all = strcmp(arg1, "-") == 0;
        r = wsg_server_sessions_json(server, all ? NULL : arg1, all ? 0 : strlen(arg1), false, 0,
                                     strtoull(rest, NULL, 10), &json, NULL);
        say("sessions %u %s %s", r, wsg_result_name(r), r == WSG_OK ? json : "{}");
        wsg_string_free(json);
    } else if (strcmp(verb, "channels") == 0 && arg1 && rest) {
        /* channels PATTERN|- LIMIT, then the next page from its cursor when there is one */
        char *json = NULL;
        bool all = strcmp(arg1, "-") == 0;
        r = wsg_server_channels_json(server, all ? NULL : arg1, all ? 0 : strlen(arg1), NULL, 0,
                                     strtoull(rest, NULL, 10), &json, NULL);
        say("channels %u %s %s", r, wsg_result_name(r), r == WSG_OK ? json : "{}");
        wsg_string_free(json);
    } else if (strcmp(verb, "history") == 0 && arg1 && rest) {
        /* history CHANNEL LIMIT OFFSET|- EPOCH|- [newest]: one page of the channel's history; an
         * OFFSET names a position (has_since), an EPOCH is passed even without one (refused). */
        char *json = NULL;
        size_t len = 0;
        char *limit = strtok(rest, " ");
        char *offset = strtok(NULL, " ");
        char *epoch = strtok(NULL, " ");
        char *order = strtok(NULL, " ");
        bool has_since = offset && strcmp(offset, "-") != 0;
        bool has_epoch = epoch && strcmp(epoch, "-") != 0;
        r = wsg_server_history_json(server, arg1, strlen(arg1), has_since,
                                    has_since ? strtoull(offset, NULL, 10) : 0, has_epoch ? epoch : NULL,
                                    has_epoch ? strlen(epoch) : 0, limit ? strtoull(limit, NULL, 10) : 0,
                                    order && strcmp(order, "newest") == 0, &json, &len);
        check(r == WSG_OK ? (json != NULL && strlen(json) == len) : json == NULL,
              "history_json_writes_its_result_only_on_success", arg1);
        say("history %u %s %s", r, wsg_result_name(r), r == WSG_OK ? json : "{}");
        wsg_string_free(json);
    } else if (strcmp(verb, "presence") == 0 && arg1 && rest) {
        /* presence CHANNEL LIMIT [AFTER] */
        char *json = NULL;
        char *limit = strtok(rest, " ");
        char *after = strtok(NULL, " ");
        r = wsg_server_presence_json(server, arg1, strlen(arg1), after, after ? strlen(after) : 0,
                                     limit ? strtoull(limit, NULL, 10) : 0, &json, NULL);
        check(r == WSG_OK ? json != NULL : json == NULL, "presence_json_writes_its_result_only_on_success", arg1);
        say("presence %u %s %s", r, wsg_result_name(r), r == WSG_OK ? json : "{}");
        wsg_string_free(json);
    } else if (strcmp(verb, "presence_stats") == 0 && arg1) {
        char *json = NULL;
        r = wsg_server_presence_stats_json(server, arg1, strlen(arg1), &json, NULL);
        say("presence_stats %u %s %s", r, wsg_result_name(r), r == WSG_OK ? json : "{}");
        wsg_string_free(json);
    } else if (strcmp(verb, "revoke_sub") == 0 && arg1) {
        r = wsg_server_revoke_sub(server, arg1, strlen(arg1));
        say("revoked %u", r);
    } else if (strcmp(verb, "revoke_jti") == 0 && arg1) {
        r = wsg_server_revoke_jti(server, arg1, strlen(arg1));
        say("revoked %u", r);
    } else if (strcmp(verb, "revoke_issued_before") == 0 && arg1) {
        r = wsg_server_revoke_issued_before(server, strtoull(arg1, NULL, 10));
        say("revoked %u", r);
    } else if (strcmp(verb, "bans") == 0) {
        char *json = NULL;
        r = wsg_server_bans_json(server, &json, NULL);
        say("bans %u %s", r, r == WSG_OK ? json : "[]");
        wsg_string_free(json);
    } else if (strcmp(verb, "ban_ip") == 0 && arg1 && rest) {
        r = wsg_server_ban_ip(server, arg1, strlen(arg1), strtod(rest, NULL), &flag);
        say("banned %u %d %s", r, (int)flag, wsg_result_name(r));
    } else if (strcmp(verb, "ban_user") == 0 && arg1 && rest) {
        r = wsg_server_ban_user(server, arg1, strlen(arg1), strtod(rest, NULL), &flag);
        say("banned %u %d %s", r, (int)flag, wsg_result_name(r));
    } else if (strcmp(verb, "lift_ban_ip") == 0 && arg1) {
        r = wsg_server_lift_ban_ip(server, arg1, strlen(arg1), &flag);
        say("lifted %u %d %s", r, (int)flag, wsg_result_name(r));
    } else if (strcmp(verb, "lift_ban_user") == 0 && arg1) {
        r = wsg_server_lift_ban_user(server, arg1, strlen(arg1), &flag);
        say("lifted %u %d %s", r, (int)flag, wsg_result_name(r));
    } else if (strcmp(verb, "auth_answer_clear") == 0) {
        set_fixture_answer(NULL);
        say("auth_answer_cleared");
    } else if ((strcmp(verb, "config_file") == 0 || strcmp(verb, "config_text_hex") == 0) && arg1) {
        load_config_case(verb, arg1);
    } else if (strcmp(verb, "stop") == 0 && arg1) {
        r = wsg_server_stop(server, strtod(arg1, NULL));
        say("stopped %u %s", r, wsg_result_name(r));
        return 0;
    } else {
        say("unknown_command %s", verb);
    }
    return 1;
}

/* The ban and reload functions' argument conventions, on the running server, leaving no ban behind. */
static void check_ban_and_reload_arguments(wsg_server *server) {
    char *json = NULL;
    size_t len = 0;
    wsg_result r = wsg_server_bans_json(server, &json, &len);
    check(r == WSG_OK && json != NULL && strcmp(json, "[]") == 0 && len == 2, "bans_json_empty_at_start",
          json ? json : wsg_result_name(r));
    wsg_string_free(json);
    json = NULL;
    r = wsg_server_bans_json(NULL, &json, NULL);
    check(r == WSG_NULL_ARGUMENT && json == NULL, "bans_json_null_server_is_null_argument", wsg_result_name(r));
    r = wsg_server_bans_json(server, NULL, NULL);
    check(r == WSG_NULL_ARGUMENT, "bans_json_null_out_is_null_argument", wsg_result_name(r));

    /* Out-parameters stay untouched on failure: 7 is neither true nor false. */
    bool flag = false;
    unsigned char sentinel = 7;
    memcpy(&flag, &sentinel, 1);
    r = wsg_server_ban_ip(server, "not-an-ip", 9, 60.0, &flag);
    char *message = last_error();
    check(r == WSG_INVALID_ARGUMENT && memcmp(&flag, &sentinel, 1) == 0 && message && strstr(message, "not-an-ip"),
          "ban_ip_bad_address_is_invalid_argument", message ? message : wsg_result_name(r));
    free(message);
    r = wsg_server_ban_user(server, "x", 1, NAN, &flag);
    check(r == WSG_INVALID_ARGUMENT, "ban_nan_secs_is_invalid_argument", wsg_result_name(r));
    r = wsg_server_ban_user(server, "x", 1, -1.0, &flag);
    check(r == WSG_INVALID_ARGUMENT, "ban_negative_secs_is_invalid_argument", wsg_result_name(r));
    r = wsg_server_ban_user(server, NULL, 3, 1.0, NULL);
    check(r == WSG_NULL_ARGUMENT, "ban_null_sub_is_null_argument", wsg_result_name(r));
    r = wsg_server_lift_ban_ip(server, "", 0, NULL);
    check(r == WSG_INVALID_ARGUMENT, "lift_ban_empty_ip_is_invalid_argument", wsg_result_name(r));
    check(memcmp(&flag, &sentinel, 1) == 0, "ban_out_param_untouched_on_failure", "applied_out was written");

    /* An IPv6 ban in the list, then lifted: the list is empty again. */
    r = wsg_server_ban_ip(server, "2001:db8::7", 11, 30.0, &flag);
    check(r == WSG_OK && flag, "ban_ipv6_applied", wsg_result_name(r));
    r = wsg_server_bans_json(server, &json, NULL);
    check(r == WSG_OK && json && strstr(json, "{\"target\":{\"kind\":\"ip\",\"value\":\"2001:db8::7\"},") &&
              strstr(json, "\"reason\":\"operator\""),
          "bans_json_lists_ip_ban", json ? json : wsg_result_name(r));
    wsg_string_free(json);
    r = wsg_server_lift_ban_ip(server, "2001:db8::7", 11, &flag);
    check(r == WSG_OK && flag, "lift_ban_ip_reports_lifted", wsg_result_name(r));
    r = wsg_server_lift_ban_ip(server, "2001:db8::7", 11, &flag);
    check(r == WSG_OK && !flag, "lift_ban_without_ban_reports_nothing_lifted", wsg_result_name(r));
    r = wsg_server_bans_json(server, &json, NULL);
    check(r == WSG_OK && json && strcmp(json, "[]") == 0, "bans_json_empty_after_lift", json ? json : "");
    wsg_string_free(json);

    r = wsg_server_reload(server, NULL);
    check(r == WSG_NULL_ARGUMENT, "reload_null_config_is_null_argument", wsg_result_name(r));
    r = wsg_server_reload(NULL, NULL);
    check(r == WSG_NULL_ARGUMENT, "reload_null_server_is_null_argument", wsg_result_name(r));
}

static void check_after_stop(wsg_server *server) {
    size_t count = 99;
    wsg_result r = wsg_server_publish(server, "room:1", 6, "{}", 2, &count);
    check(r == WSG_NOT_RUNNING && count == 99, "publish_after_stop_is_not_running", wsg_result_name(r));
    r = wsg_server_stop(server, 0.0);
    check(r == WSG_OK, "stop_is_idempotent", wsg_result_name(r));
    char *json = NULL;
    r = wsg_server_stats_json(server, &json, NULL);
    check(r == WSG_OK && json != NULL && strstr(json, "\"sessions_active\":0") != NULL,
          "stats_after_stop_show_no_session", json ? json : wsg_result_name(r));
    wsg_string_free(json);
    r = wsg_server_stop(server, NAN);
    check(r == WSG_INVALID_ARGUMENT, "nan_grace_is_invalid_argument", wsg_result_name(r));
}

/* A server that cannot start leaves user_data with the caller: user_data_drop is not called. */
static void check_failed_start_keeps_user_data(void) {
    host_state state = {0};
    wsg_hooks hooks = {0};
    hooks.user_data = &state;
    hooks.user_data_drop = host_drop;
    const char *text = "[server]\nlisten = \"127.0.0.1:0\"\n[auth]\nhmac_secret_file = \"/nonexistent/secret\"\n"
                       "issuer = \"i\"\naudience = \"a\"\n";
    wsg_config *config = NULL;
    wsg_server *server = NULL;
    wsg_result r = wsg_config_from_text(text, strlen(text), &config);
    if (r == WSG_OK) r = wsg_server_start(config, &hooks, &server);
    char *message = last_error();
    check(r == WSG_CONFIG_FILE && server == NULL && message && strstr(message, "auth.hmac_secret_file") != NULL,
          "start_with_missing_secret_is_config_file", message ? message : wsg_result_name(r));
    check(atomic_load(&state.drops) == 0, "failed_start_keeps_user_data", "user_data_drop was called");
    free(message);
    wsg_config_free(config);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s CONFIG.toml\n", argv[0]);
        return 2;
    }
    check_config_errors(argv[1]);
    check_failed_start_keeps_user_data();

    size_t text_len = 0;
    char *text = read_file(argv[1], &text_len);
    wsg_config *config = NULL;
    wsg_result r = text ? wsg_config_from_text(text, text_len, &config) : WSG_CONFIG_FILE;
    free(text);
    check(r == WSG_OK, "config_from_toml_text", wsg_result_name(r));
    if (r != WSG_OK) return 1;

    static host_state state;
    pthread_mutex_init(&state.threads_lock, NULL);
    wsg_hooks hooks = {0};
    hooks.user_data = &state;
    hooks.user_data_drop = host_drop;
    hooks.authenticate = host_authenticate;
    hooks.authorize = host_authorize;
    hooks.rpc = host_rpc;
    hooks.event = host_event;

    wsg_server *server = NULL;
    r = wsg_server_start(config, &hooks, &server);
    wsg_config_free(config); /* the server keeps its own copy */
    char *message = r == WSG_OK ? NULL : last_error();
    check(r == WSG_OK && server != NULL, "server_start", message ? message : wsg_result_name(r));
    free(message);
    if (r != WSG_OK) return 1;
    atomic_store(&state.server, server);

    uint16_t port = 0;
    r = wsg_server_local_port(server, &port);
    check(r == WSG_OK && port != 0, "local_port", wsg_result_name(r));
    check_ban_and_reload_arguments(server);
    say("PORT %u", (unsigned)port);

    char line[4096];
    int running = 1;
    while (running && fgets(line, sizeof line, stdin) != NULL) running = handle_command(server, line);
    if (running) wsg_server_stop(server, 1.0); /* stdin closed early: still shut down cleanly */

    check_after_stop(server);
    check(atomic_load(&state.drops) == 0, "user_data_kept_until_free", "dropped before free");
    wsg_server_free(server);
    check(atomic_load(&state.drops) == 1, "user_data_dropped_once_by_free", "user_data_drop count != 1");
    check(atomic_load(&state.events) > 0, "event_hook_received_events", "no event");

    /* Threads still holding calls complete them against a freed server: harmless by contract. */
    pthread_mutex_lock(&state.threads_lock);
    int threads = state.thread_count;
    pthread_mutex_unlock(&state.threads_lock);
    for (int i = 0; i < threads; i++) pthread_join(state.threads[i], NULL);
    pthread_mutex_destroy(&state.threads_lock);
    set_fixture_answer(NULL);

    say("done passed=%d failed=%d", atomic_load(&passed), atomic_load(&failed));
    return atomic_load(&failed) == 0 ? 0 : 1;
}
