#include "link.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "timing.hpp"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "blobs carry little-endian float32 as in memory");

namespace gramophone {

namespace {

constexpr int64_t kMs = 1000000;
constexpr int64_t kRetryFirst = 100 * kMs;   // backoff after a failure, doubling...
constexpr int64_t kRetryMost = 2000 * kMs;   // ...up to this
constexpr int64_t kConnectTimeout = 10000 * kMs;  // /connect prepares a stream: a fraction of a second
constexpr int64_t kSilenceLimit = 2000 * kMs;     // nothing heard for this long: the server is gone
constexpr int64_t kPingEvery = 250 * kMs;
constexpr int64_t kParamEvery = 20 * kMs;    // at most 50 changes a second per parameter
constexpr int64_t kRenderInFlight = 192;     // the server queues at most 256 render blocks
constexpr int kSocketBuffer = 1 << 20;       // a render sends tens of blocks at once
constexpr int64_t kStatisticsEvery = 100 * kMs;
constexpr int64_t kAddressSettle = 300 * kMs;

size_t next_power_of_two(size_t n) {
    size_t p = 1;
    while (p < n) p *= 2;
    return p;
}

}  // namespace

Link::Link(Controls& controls, Report& report) : controls_(controls), report_(report) {
    for (uint32_t i = 0; i < kServerParamCount; ++i) sent_[i] = kServerParams[i].def;
}

Link::~Link() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    if (state_ == State::Up) {
        send_params(now_ns(), false, false);  // the last value of every knob, even within its interval
        send_packet(osc::Writer(out_, sizeof out_).begin("/disconnect", "").size());
    }
    close_socket();
}

// The address parameters move one number at a time (and a host's slider through many): away from
// a working session a new server is taken once they have been still for a moment; otherwise at once.
void Link::follow_address(int64_t now, bool settle) {
    char host[32];
    std::snprintf(host, sizeof host, "%d.%d.%d.%d", controls_.address[0].load(), controls_.address[1].load(),
                  controls_.address[2].load(), controls_.address[3].load());
    const int port = controls_.port.load();
    if (host != asked_host_ || port != asked_port_) {
        asked_host_ = host;
        asked_port_ = port;
        asked_at_ = now;
    }
    if (asked_host_ == host_ && asked_port_ == port_) return;
    if (settle && state_ == State::Up && now - asked_at_ < kAddressSettle) return;
    if (state_ == State::Up) send_packet(osc::Writer(out_, sizeof out_).begin("/disconnect", "").size());
    host_ = asked_host_;
    port_ = asked_port_;
    close_socket();
    if (state_ != State::Idle) state_ = State::Down;
    retry_at_ = backoff_ = 0;
}

void Link::activate(const Format& format) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!thread_.joinable()) thread_ = std::thread([this] { run(); });  // hosts make instances they never run
    format_ = format;
    // A slot is reused N blocks later: by then the audio thread has played the block it held,
    // since it sends at most a span ahead of what it plays.
    const int64_t span = int64_t{kSpanBlocks} * format.block;
    const size_t slots = static_cast<size_t>((format.latency + span) / format.block + 3);
    const size_t samples = size_t{format.block} * format.channels;
    slots_.allocate(slots, samples);
    ring_.allocate(next_power_of_two(slots + 2 * kSpanBlocks), samples);
    next_index_ = oldest_out_ = 0;
    in_flight_ = 0;
    active_ = true;
    const int64_t now = now_ns();
    follow_address(now, false);
    const bool same = session_format_.sample_rate == format.sample_rate &&
                      session_format_.channels == format.channels && session_format_.block == format.block;
    if ((state_ == State::Up || state_ == State::Connecting) && !same) {
        if (state_ == State::Up) send_packet(osc::Writer(out_, sizeof out_).begin("/disconnect", "").size());
        state_ = State::Down;
        retry_at_ = backoff_ = 0;
    } else if (state_ == State::Up) {
        // Same session, new stream: the server forgets the old audio; its late answers are ignored.
        // New blocks wait for /done /reset: the server answers dry every block in flight when it
        // handles the reset, even one that arrived after it.
        resets_pending_ += send_packet(osc::Writer(out_, sizeof out_).begin("/reset", "").size());
        seq_base_ = next_seq_;
        judge();
    }
    if (state_ != State::Up && state_ != State::Connecting) {
        state_ = State::Down;
        retry_at_ = backoff_ = 0;
    }
    // Connects once the host runs the plugin: hosts such as JUCE's deliver the parameters set
    // before activation (the server's address among them) with the first call.
    controls_.running = false;
    attempted_ = false;
    publish(now);
}

void Link::deactivate() {
    std::lock_guard<std::mutex> lock(mutex_);
    active_ = false;
}

// -- the thread ---------------------------------------------------------------------------------

void Link::run() {
    while (!stop_) {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            step(now_ns());
        }
        // Woken by an answer at once; otherwise every millisecond, to send the blocks the audio
        // thread completed (it never makes a system call to wake this thread).
        pollfd fd{sock_, POLLIN, 0};
        if (sock_ >= 0) {
            poll(&fd, 1, active_ ? 1 : 20);
        } else {
            usleep(active_ ? 1000 : 20000);
        }
    }
}

void Link::step(int64_t now) {
    follow_address(now, true);
    receive(now);
    switch (state_) {
        case State::Idle:
            break;
        case State::Down:
        case State::Refused:
            if (active_ && controls_.running.load() && now >= retry_at_) connect(now);
            break;
        case State::Connecting:
            if (now > deadline_) lose("no answer to /connect", now);
            break;
        case State::Up:
            keep_alive(now);
            if (state_ != State::Up) break;
            sync_mode();
            send_params(now, false);
            if (controls_.style_slot.load() != style_sent_ && !styles_pending_) {
                style_sent_ = controls_.style_slot.load();
                if (style_sent_ > 0) {
                    styles_pending_ = send_packet(osc::Writer(out_, sizeof out_).begin("/style/list", "").size());
                }
            }
            break;
    }
    send_blocks(now);
    publish(now);
}

void Link::receive(int64_t now) {
    while (sock_ >= 0) {
        const ssize_t n = recv(sock_, in_, sizeof in_, MSG_DONTWAIT);
        if (n > 0) {
            last_heard_ = now;
            handle(in_, static_cast<size_t>(n), now);
            continue;
        }
        if (n < 0 && errno == ECONNREFUSED && (state_ == State::Up || state_ == State::Connecting)) {
            lose("nothing listens there", now);
        }
        return;
    }
}

void Link::handle(const char* data, size_t size, int64_t now) {
    osc::Reader msg;
    if (!msg.parse(data, size)) return;
    int32_t a = 0, b = 0;
    const char* text = nullptr;
    const char* more = nullptr;
    size_t bytes = 0;
    if (msg.is("/audio")) {
        if (msg.next_int(a) && msg.next_blob(text, bytes)) on_audio(a, text, bytes, now);
    } else if (msg.is("/connected")) {
        if (msg.next_int(a) && msg.next_int(b)) on_connected(b, now);
    } else if (msg.is("/fail")) {
        if (msg.next_string(text) && msg.next_string(more)) on_fail(text, more, now);
    } else if (msg.is("/done")) {
        if (!msg.next_string(text)) return;
        if (std::strcmp(text, "/reset") == 0 && resets_pending_ > 0) --resets_pending_;
        if (std::strcmp(text, "/mode") == 0 && msg.next_string(more)) {
            render_ = std::strcmp(more, "render") == 0;
            mode_pending_ = false;
        }
    } else if (msg.is("/style/list/reply")) {
        on_styles(msg);
    }
}

void Link::on_connected(int32_t latency, int64_t now) {
    if (state_ != State::Connecting) return;
    state_ = State::Up;
    server_latency_ = latency;
    backoff_ = 0;
    last_heard_ = last_ping_ = now;
    render_ = mode_pending_ = false;
    resets_pending_ = 0;
    next_seq_ = 0;
    seq_base_ = -next_index_;  // the next block sent is the session's block 0
    oldest_out_ = next_index_;
    in_flight_ = 0;
    style_sent_ = 0;
    styles_pending_ = false;
    std::fill(std::begin(histogram_), std::end(histogram_), 0u);
    arrivals_ = 0;
    worst_ms_ = 0.0;
    report_.session.fetch_add(1);
    judge();
}

// Whether the server's latency plus the margin fits the time between a block leaving and the
// audio thread needing its answer; for live mode (a render waits as long as it takes).
void Link::judge() {
    if (state_ != State::Up) return;
    const auto& f = format_;
    const int64_t needed = server_latency_ + static_cast<int64_t>(std::ceil(kMarginSeconds * f.sample_rate));
    const int64_t window = answer_window(f.latency, f.block, f.host_block, f.crossfade);
    fits_ = window >= needed;
    // A block kept waiting by a busy machine still goes out while the server, answering within
    // its latency, could be in time: its answer usually comes well before that (it is a worst
    // case), and one that does come late is played dry like any other late answer.
    live_age_limit_ = static_cast<int64_t>((window - server_latency_) / f.sample_rate * 1e9);
    const double ms = 1000.0 / f.sample_rate;
    report_.server_latency_ms = static_cast<float>(server_latency_ * ms);
    report_.needed_latency_ms =
        static_cast<float>(smallest_latency(needed, f.block, f.host_block, f.crossfade) * ms);
}

void Link::on_audio(int32_t seq, const char* data, size_t bytes, int64_t now) {
    if (state_ != State::Up) return;
    const int64_t index = seq - seq_base_;
    if (index < 0 || index >= next_index_) return;  // another activation's block
    Slot& slot = slots_.at(index);
    const size_t samples = size_t{format_.block} * format_.channels;
    if (slot.state.load(std::memory_order_relaxed) != pack_slot(index, kSlotSent) || bytes != samples * 4) return;
    // Answers come in seq order: a block still out before this one was lost on the way.
    oldest_out_ = std::max<int64_t>(oldest_out_, index - static_cast<int64_t>(slots_.size()));
    for (; oldest_out_ < index; ++oldest_out_) {
        Slot& lost = slots_.at(oldest_out_);
        if (lost.state.load(std::memory_order_relaxed) != pack_slot(oldest_out_, kSlotSent)) continue;
        lost.state.store(pack_slot(oldest_out_, kSlotDry), std::memory_order_release);
        --in_flight_;
    }
    oldest_out_ = index + 1;
    --in_flight_;
    // The server answers a block it could not finish in time with the block itself: play our own
    // dry copy then, crossfaded. A silent block is its own answer either way.
    const bool silent = std::all_of(slot.samples, slot.samples + samples, [](float x) { return x == 0.0f; });
    const bool dry = !silent && std::memcmp(slot.samples, data, bytes) == 0;
    if (!dry) std::memcpy(slot.samples, data, bytes);
    slot.arrived_ns = now;
    slot.state.store(pack_slot(index, dry ? kSlotDry : kSlotWet), std::memory_order_release);
    if (!dry && slot.need_index.load(std::memory_order_acquire) == index) {
        record((now - slot.need_ns.load()) / 1e6);  // it was needed already: late, played dry
        slot.state.store(pack_slot(index, kSlotDry), std::memory_order_release);
    }
}

void Link::on_fail(const char* address, const char* message, int64_t now) {
    if (std::strcmp(address, "/connect") == 0 && state_ == State::Connecting && !unfitted_ &&
        std::strstr(message, "cannot fit") != nullptr) {
        unfitted_ = true;  // at once again without the window: its latency then says how much more is needed
        state_ = State::Down;
        retry_at_ = now;
    } else if (std::strcmp(address, "/connect") == 0 && state_ == State::Connecting) {
        if (last_status_ != kStatusRefused) say("gramophone plugin: the server refused the session: %s\n", message);
        state_ = State::Refused;
        backoff_ = std::min(backoff_ ? 2 * backoff_ : kRetryFirst, kRetryMost);
        retry_at_ = now + backoff_;
    } else if (std::strstr(message, "no session") != nullptr) {
        lose("the server has no session for us (restarted or expired)", now);
    } else {
        say("gramophone plugin: the server says %s: %s\n", address, message);
    }
}

void Link::on_styles(osc::Reader& reader) {
    styles_pending_ = false;
    const char* name = nullptr;
    int count = 0;
    while (reader.next_string(name)) {
        if (++count == style_sent_) {
            send_packet(osc::Writer(out_, sizeof out_).begin("/style/select", "s").str(name).size());
            return;
        }
    }
    if (style_sent_ > 0) tell("warning", "gramophone plugin: style slot %d, but the server has %d styles\n", style_sent_, count);
}

void Link::connect(int64_t now) {
    attempted_ = true;
    if (!open_socket()) {
        backoff_ = std::min(backoff_ ? 2 * backoff_ : kRetryFirst, kRetryMost);
        retry_at_ = now + backoff_;
        return;
    }
    send_params(now, true);  // before /connect: the session's latency depends on `budget`
    // The most latency the server may take and still be in time for the audio thread: the server
    // lowers its optimiser budget to fit it (reply port 0: answers come to this socket).
    const int64_t room = answer_window(format_.latency, format_.block, format_.host_block, format_.crossfade) -
                         static_cast<int64_t>(std::ceil((kMarginSeconds + kSendSeconds) * format_.sample_rate));
    osc::Writer request(out_, sizeof out_);
    request.begin("/connect", unfitted_ ? "iii" : "iiiii")
        .i32(static_cast<int32_t>(format_.sample_rate))
        .i32(static_cast<int32_t>(format_.channels))
        .i32(static_cast<int32_t>(format_.block));
    if (!unfitted_) request.i32(0).i32(static_cast<int32_t>(std::max<int64_t>(room, 1)));
    const bool sent = send_packet(request.size());
    session_format_ = format_;
    state_ = State::Connecting;
    deadline_ = now + kConnectTimeout;
    if (!sent) lose("cannot send to the server", now);
}

void Link::lose(const char* why, int64_t now) {
    unfitted_ = false;  // another server, or the same one less loaded: try fitting again
    // Every block still out will get no answer: the audio thread plays them dry, a render stops waiting.
    const int64_t first = std::max<int64_t>(0, next_index_ - static_cast<int64_t>(slots_.size()));
    for (int64_t index = first; index < next_index_; ++index) {
        Slot& slot = slots_.at(index);
        if (slot.state.load(std::memory_order_relaxed) == pack_slot(index, kSlotSent)) {
            slot.state.store(pack_slot(index, kSlotDry), std::memory_order_release);
        }
    }
    if (state_ == State::Up) say("gramophone plugin: lost the server at %s:%d: %s\n", host_.c_str(), port_, why);
    in_flight_ = 0;
    oldest_out_ = next_index_;
    state_ = State::Down;
    backoff_ = std::min(backoff_ ? 2 * backoff_ : kRetryFirst, kRetryMost);
    retry_at_ = now + backoff_;
}

void Link::keep_alive(int64_t now) {
    if (now - last_heard_ > kSilenceLimit) {
        lose("it stopped answering", now);
        return;
    }
    if (now - last_ping_ >= kPingEvery) {
        last_ping_ = now;
        send_packet(osc::Writer(out_, sizeof out_).begin("/ping", "").size());
    }
}

void Link::sync_mode() {
    const int wanted = controls_.wanted.load();
    if (wanted == kWantUnknown || mode_pending_ || (wanted == kWantRender) == render_) return;
    mode_pending_ = send_packet(
        osc::Writer(out_, sizeof out_).begin("/mode", "s").str(wanted == kWantRender ? "render" : "live").size());
}

void Link::send_params(int64_t now, bool all, bool limit) {
    char address[64];
    for (uint32_t i = 0; i < kServerParamCount; ++i) {
        const float value = controls_.params[i].load(std::memory_order_relaxed);
        if (!all && (value == sent_[i] || (limit && now - sent_at_[i] < kParamEvery))) continue;
        std::snprintf(address, sizeof address, "/param/%s", kServerParams[i].symbol);
        if (send_packet(osc::Writer(out_, sizeof out_).begin(address, "f").f32(value).size())) {
            sent_[i] = value;
            sent_at_[i] = now;
        }
    }
}

void Link::send_blocks(int64_t now) {
    const int wanted = controls_.wanted.load();
    const bool ready = state_ == State::Up && !mode_pending_ && resets_pending_ == 0 && wanted != kWantUnknown &&
                       (wanted == kWantRender) == render_;
    // Held until the session is up and in the host's mode: a render waits for them, live drops
    // the ones that grew too old meanwhile.
    const bool hold = state_ == State::Connecting || (state_ == State::Up && !ready);
    const size_t samples = size_t{format_.block} * format_.channels;
    while (const OutBlock* block = ring_.peek()) {
        if (hold || (ready && render_ && in_flight_ >= kRenderInFlight)) return;
        Slot& slot = slots_.at(block->index);
        const bool send = ready && (render_ || (fits_ && now - block->ready_ns <= live_age_limit_));
        bool sent = false;
        if (send) {
            std::memcpy(slot.samples, block->samples, samples * sizeof(float));
            harvest(slot, pack_slot(block->index, kSlotSent));
            sent = send_packet(osc::Writer(out_, sizeof out_)
                                   .begin("/content", "ib")
                                   .i32(static_cast<int32_t>(seq_base_ + block->index))
                                   .blob(block->samples, samples * sizeof(float))
                                   .size());
        }
        if (sent) {
            ++in_flight_;
            next_seq_ = seq_base_ + block->index + 1;
        } else {
            harvest(slot, pack_slot(block->index, kSlotDry));
        }
        next_index_ = block->index + 1;
        ring_.pop();
        if (state_ != State::Up && send) return;  // the send found the server gone
    }
}

// Before a slot takes a new block: the arrival of the wet block it held, against when it was needed.
void Link::harvest(Slot& slot, uint64_t next_state) {
    const uint64_t state = slot.state.load(std::memory_order_relaxed);
    if ((state & 3) == kSlotWet) {
        const auto index = static_cast<int64_t>(state >> 2);
        if (slot.need_index.load(std::memory_order_acquire) == index) {
            record((slot.arrived_ns - slot.need_ns.load()) / 1e6);
        }
    }
    slot.state.store(next_state, std::memory_order_release);
}

void Link::record(double ms) {
    const int bin = std::clamp(static_cast<int>(std::floor((ms + 2000.0) * 4.0)), 0, kHistogramBins - 1);
    ++histogram_[bin];
    worst_ms_ = arrivals_++ == 0 ? ms : std::max(worst_ms_, ms);
}

void Link::publish(int64_t now) {
    const int wanted = controls_.wanted.load();
    int status = kStatusNoServer;
    if (state_ == State::Connecting) status = kStatusConnecting;
    if (state_ == State::Refused) status = kStatusRefused;
    if (state_ == State::Up) {
        const bool ready = !mode_pending_ && resets_pending_ == 0 && wanted != kWantUnknown && (wanted == kWantRender) == render_;
        status = !ready ? kStatusConnecting : render_ ? kStatusRender : fits_ ? kStatusLive : kStatusLatencyTooSmall;
    }
    report_.status = status;
    report_.streaming = status == kStatusLive || status == kStatusRender;
    // An answer may still come: a render waits for it.
    report_.waiting = state_ == State::Up || state_ == State::Connecting || (active_ && !attempted_);
    if (status != last_status_) {
        last_status_ = status;
        if (status == kStatusLive || status == kStatusRender) {
            tell("info", "gramophone plugin: %s at %s:%d, server latency %.1f ms inside the plugin's %.1f ms\n",
                status == kStatusLive ? "live" : "rendering", host_.c_str(), port_, report_.server_latency_ms.load(),
                1000.0 * format_.latency / format_.sample_rate);
        } else if (status == kStatusLatencyTooSmall) {
            tell("warning", "gramophone plugin: staying dry: the server's latency %.1f ms + %.0f ms margin does not fit the "
                "plugin's %.1f ms with host blocks of %u; set the latency to %.0f ms or more\n",
                report_.server_latency_ms.load(), 1000 * kMarginSeconds, 1000.0 * format_.latency / format_.sample_rate,
                format_.host_block, std::ceil(report_.needed_latency_ms.load()));
        }
    }
    if (arrivals_ == 0 || now - last_statistics_ < kStatisticsEvery) return;
    last_statistics_ = now;
    uint32_t seen = 0;
    const auto p99 = static_cast<uint32_t>(std::ceil(0.99 * arrivals_));
    for (int bin = 0; bin < kHistogramBins; ++bin) {
        seen += histogram_[bin];
        if (seen >= p99) {
            // A bin's upper edge, but never past the worst arrival itself when both share the bin.
            report_.arrival_p99_ms = static_cast<float>(std::min((bin + 1) / 4.0 - 2000.0, worst_ms_));
            break;
        }
    }
    report_.arrival_worst_ms = static_cast<float>(worst_ms_);
}

// -- the socket -----------------------------------------------------------------------------------

bool Link::open_socket() {
    if (sock_ >= 0) return true;
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_DGRAM;
    addrinfo* found = nullptr;
    const std::string port = std::to_string(port_);
    if (const int error = getaddrinfo(host_.c_str(), port.c_str(), &hints, &found); error != 0) {
        say("gramophone plugin: cannot resolve %s: %s\n", host_.c_str(), gai_strerror(error));
        return false;
    }
    sock_ = socket(found->ai_family, SOCK_DGRAM, 0);
    // Connected: only the server's datagrams arrive, and a closed port reports ECONNREFUSED.
    if (sock_ < 0 || ::connect(sock_, found->ai_addr, found->ai_addrlen) != 0) {
        say("gramophone plugin: cannot open a socket to %s:%d: %s\n", host_.c_str(), port_, std::strerror(errno));
        freeaddrinfo(found);
        close_socket();
        return false;
    }
    freeaddrinfo(found);
    fcntl(sock_, F_SETFL, fcntl(sock_, F_GETFL) | O_NONBLOCK);
    setsockopt(sock_, SOL_SOCKET, SO_RCVBUF, &kSocketBuffer, sizeof kSocketBuffer);
    setsockopt(sock_, SOL_SOCKET, SO_SNDBUF, &kSocketBuffer, sizeof kSocketBuffer);
    return true;
}

void Link::close_socket() {
    if (sock_ >= 0) close(sock_);
    sock_ = -1;
}

bool Link::send_packet(size_t size) {
    if (size == 0 || sock_ < 0) return false;
    if (send(sock_, out_, size, 0) == static_cast<ssize_t>(size)) return true;
    if (errno == ECONNREFUSED && (state_ == State::Up || state_ == State::Connecting)) {
        lose("nothing listens there", now_ns());
    }
    return false;
}

void Link::say(const char* fmt, ...) {
    va_list args;
    va_start(args, fmt);
    std::vfprintf(stderr, fmt, args);
    va_end(args);
}

void Link::tell(const char* level, const char* fmt, ...) {
    char line[512];
    va_list args;
    va_start(args, fmt);
    std::vsnprintf(line, sizeof line, fmt, args);
    va_end(args);
    std::fputs(line, stderr);
    if (state_ == State::Up) send_packet(osc::Writer(out_, sizeof out_).begin("/log", "ss").str(level).str(line).size());
}

}  // namespace gramophone
