// A minimal C++17 service on wsguard: RPC answered on the service's own worker threads, an
// authorize rule, a publication, stats, a ban and its lifting, a reload, a graceful stop.
//
// Usage: example CONFIG.toml   (the config must declare the RPC method "echo")
#include "wsguard.hpp"

#include <cstdio>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

class EchoService : public wsguard::Handler {
public:
    ~EchoService() override {
        std::lock_guard<std::mutex> lock(mutex_);
        for (auto &worker : workers_) worker.join();
    }

    bool authorize(const wsg_authorize_request &request) override {
        return std::string_view(request.channel.data, request.channel.len) != "room:denied";
    }

    void rpc(wsguard::RpcCall call) override {
        // Hand the call to a worker: the server thread returns at once.
        std::lock_guard<std::mutex> lock(mutex_);
        workers_.emplace_back([call = std::move(call)]() mutable {
            std::string result = "{\"echo\":" + std::string(call.payload_json()) + "}";
            call.respond(result);
        });
    }

private:
    std::mutex mutex_;
    std::vector<std::thread> workers_;
};

}  // namespace

int main(int argc, char **argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s CONFIG.toml\n", argv[0]);
        return 2;
    }
    std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress stays visible if a step hangs
    try {
        auto config = wsguard::Config::from_file(argv[1]);
        auto server = wsguard::Server::start(config, std::make_unique<EchoService>());
        std::printf("example: wsguard %s listening on port %u\n", wsg_version(), unsigned{server.local_port()});
        std::size_t delivered = server.publish("room:1", R"({"hello":"from C++"})");
        std::printf("example: published to %zu subscribers\n", delivered);
        std::printf("example: stats %s\n", server.stats_json().c_str());
        server.ban_user("mallory", 60.0);
        std::printf("example: bans %s\n", server.bans_json().c_str());
        std::printf("example: lifted %d\n", int{server.lift_ban_user("mallory")});
        // Reloading re-reads the file (a refused reload throws, listing every problem).
        server.reload(wsguard::Config::from_file(argv[1]));
        std::printf("example: reloaded\n");
        server.stop(1.0);
        try {
            server.publish("room:1", "{}");
            std::printf("example: publish after stop unexpectedly succeeded\n");
            return 1;
        } catch (const wsguard::Error &e) {
            std::printf("example: after stop: %s (%u)\n", e.name(), e.code());
        }
        try {
            wsguard::Config::from_text("[server]\nlisen = 1\n");
        } catch (const wsguard::Error &e) {
            std::printf("example: bad config: %s (%u): %s\n", e.name(), e.code(), e.what());
        }
    } catch (const wsguard::Error &e) {
        std::fprintf(stderr, "example: %s (%u): %s\n", e.name(), e.code(), e.what());
        return 1;
    }
    std::printf("example: ok\n");
    return 0;
}
