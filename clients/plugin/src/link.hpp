// The plugin's network thread: one UDP session with `gramophone serve`. It sends the blocks the
// audio thread completes, files the answers in their slots, sends parameter changes, keeps the
// session's mode (live or render) in step with the host, and reconnects with backoff whenever the
// server goes away. The audio thread only touches the ring, the slots and atomics.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

#include "osc.hpp"
#include "params.hpp"
#include "shared.hpp"

namespace gramophone {

// What the plugin streams, fixed from one activation to the next deactivation.
struct Format {
    double sample_rate = 0.0;
    uint32_t channels = 0;
    uint32_t block = 0;       // frames per block to the server
    uint32_t host_block = 0;  // the host's largest call
    uint32_t crossfade = 0;   // frames
    int64_t latency = 0;      // frames reported to the host
};

// The audio thread's wish for the session's mode.
enum Wanted : int { kWantUnknown = -1, kWantLive = 0, kWantRender = 1 };

// Written by the plugin (any thread), read by the network thread.
struct Controls {
    std::atomic<float> params[kServerParamCount];
    std::atomic<int> style_slot{0};
    std::atomic<int> wanted{kWantUnknown};
    std::atomic<int> address[4] = {kDefaultAddress[0], kDefaultAddress[1], kDefaultAddress[2], kDefaultAddress[3]};
    std::atomic<int> port{kDefaultPort};
    std::atomic<bool> running{false};  // the host has called the plugin since its activation
};

// Written by the network thread, read by the plugin's outputs and the audio thread.
struct Report {
    std::atomic<int> status{kStatusNoServer};
    std::atomic<bool> streaming{false};  // the session answers blocks (live and fitting, or render)
    std::atomic<bool> waiting{false};    // connecting or connected: a render may wait for answers
    std::atomic<int> session{0};         // counts sessions; the audio thread resets its counters
    std::atomic<float> server_latency_ms{0.0f};
    std::atomic<float> needed_latency_ms{0.0f};
    std::atomic<float> arrival_p99_ms{0.0f};
    std::atomic<float> arrival_worst_ms{0.0f};
};

class Link {
public:
    static constexpr double kMarginSeconds = 0.005;  // beyond the server's latency: send, receive, jitter
    // Time for a finished block to wait for the network thread (it polls every millisecond), kept
    // out of the room the server is offered: a server that fits its latency to that room exactly
    // still leaves a block this long to go out before the margin for the way back is touched.
    static constexpr double kSendSeconds = 0.002;

    Link(Controls& controls, Report& report);
    ~Link();  // ends the session and the thread
    Link(const Link&) = delete;
    Link& operator=(const Link&) = delete;

    // Not real-time: the audio thread is idle. Sizes the ring and slots for `format`.
    void activate(const Format& format);
    void deactivate();

    BlockRing& ring() { return ring_; }
    SlotTable& slots() { return slots_; }

private:
    enum class State { Idle, Down, Connecting, Up, Refused };

    void run();
    void step(int64_t now);
    void follow_address(int64_t now, bool settle);
    void receive(int64_t now);
    void handle(const char* data, size_t size, int64_t now);
    void on_connected(int32_t latency, int64_t now);
    void on_audio(int32_t seq, const char* data, size_t bytes, int64_t now);
    void on_fail(const char* address, const char* message, int64_t now);
    void on_styles(osc::Reader& reader);
    void connect(int64_t now);
    void lose(const char* why, int64_t now);
    void keep_alive(int64_t now);
    void sync_mode();
    void send_params(int64_t now, bool all, bool limit = true);
    void send_blocks(int64_t now);
    void harvest(Slot& slot, uint64_t next_state);
    void record(double ms);
    void publish(int64_t now);
    bool open_socket();
    void close_socket();
    bool send_packet(size_t size);
    void judge();
    void say(const char* fmt, ...) __attribute__((format(printf, 2, 3)));
    // The same line on stderr and, while a session is up, in the server's log (/log LEVEL MESSAGE).
    void tell(const char* level, const char* fmt, ...) __attribute__((format(printf, 3, 4)));

    Controls& controls_;
    Report& report_;
    BlockRing ring_;
    SlotTable slots_;

    std::mutex mutex_;  // the network thread's step against activation
    std::thread thread_;
    std::atomic<bool> stop_{false};

    std::string host_;
    int port_ = 0;
    std::string asked_host_;  // the address parameters, once they have stopped moving
    int asked_port_ = 0;
    int64_t asked_at_ = 0;
    int sock_ = -1;
    State state_ = State::Idle;
    bool active_ = false;
    bool attempted_ = false;  // a connection was tried since the activation
    Format format_;
    Format session_format_;  // what the session was connected with
    int64_t retry_at_ = 0, backoff_ = 0, deadline_ = 0, last_heard_ = 0, last_ping_ = 0, last_statistics_ = 0;
    int32_t server_latency_ = 0;
    bool fits_ = false;            // the server's latency + margin fits the answer window (live)
    bool unfitted_ = false;        // the server could not fit our window: connect without one, to learn its latency
    int64_t live_age_limit_ = 0;   // ns: an older block cannot come back in time (live)
    int64_t seq_base_ = 0;    // seq of block index 0 in this activation
    int64_t next_seq_ = 0;    // the next seq the session has not seen
    int64_t next_index_ = 0;  // the next block index to take from the ring
    int64_t in_flight_ = 0;
    int64_t oldest_out_ = 0;  // no block before this one is still out
    bool render_ = false;     // the session's mode on the server
    bool mode_pending_ = false;
    int resets_pending_ = 0;  // sent, not yet done: new blocks wait
    float sent_[kServerParamCount] = {};
    int64_t sent_at_[kServerParamCount] = {};
    int style_sent_ = 0;
    bool styles_pending_ = false;
    int last_status_ = -1;

    static constexpr int kHistogramBins = 16000;  // 0.25 ms bins over ±2 s
    uint32_t histogram_[kHistogramBins] = {};
    uint32_t arrivals_ = 0;
    double worst_ms_ = 0.0;

    char out_[65536];
    char in_[65536];
};

}  // namespace gramophone
