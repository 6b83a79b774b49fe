// A small CLAP host for the tests and bench/plugin.py, written against the CLAP headers DPF ships.
// It loads one plugin, provides the host extensions clap.latency (DPF 1.6 calls it unchecked),
// clap.params and clap.thread-check, and runs a raw float32 file through it: offline as fast as
// it can, or paced in real time (each call once its block of input would have been captured).
//
//   clap-host PLUGIN.clap --list
//   clap-host PLUGIN.clap --in in.f32 --out out.f32 [--rate 48000] [--block 256] [--realtime]
//             [--flush] [--param NAME=VALUE]... [--ramp NAME=FROM:TO] [--stall SECONDS:MS]
//             [--trace t.jsonl] [--report r.json]
//
// Audio files are interleaved float32 with the plugin's channel count. --flush appends the
// plugin's latency in silence, so all of the input comes out. --ramp moves a parameter linearly
// over the run, one change per call. --stall stops the host for MS milliseconds once SECONDS of
// audio have gone through (real time: it then catches up with calls back to back, as hosts that
// buffer ahead do). --trace writes the output parameters every 0.25 s of audio; --report the
// latency, process() times and final outputs.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <dlfcn.h>
#include <time.h>

#include "clap/entry.h"
#include "clap/events.h"
#include "clap/ext/audio-ports.h"
#include "clap/ext/latency.h"
#include "clap/ext/params.h"
#include "clap/ext/thread-check.h"
#include "clap/host.h"
#include "clap/plugin-factory.h"
#include "clap/plugin.h"
#include "clap/process.h"

namespace {

bool latency_changed = false;
bool callback_requested = false;

void on_latency_changed(const clap_host_t*) { latency_changed = true; }
void on_rescan(const clap_host_t*, clap_param_rescan_flags) {}
void on_clear(const clap_host_t*, clap_id, clap_param_clear_flags) {}
void on_request_flush(const clap_host_t*) {}
bool on_thread(const clap_host_t*) { return true; }  // one thread does everything here

const clap_host_latency_t host_latency{on_latency_changed};
const clap_host_params_t host_params{on_rescan, on_clear, on_request_flush};
const clap_host_thread_check_t host_thread_check{on_thread, on_thread};

const void* get_extension(const clap_host_t*, const char* id) {
    if (std::strcmp(id, CLAP_EXT_LATENCY) == 0) return &host_latency;
    if (std::strcmp(id, CLAP_EXT_PARAMS) == 0) return &host_params;
    if (std::strcmp(id, CLAP_EXT_THREAD_CHECK) == 0) return &host_thread_check;
    return nullptr;
}
void request_restart(const clap_host_t*) {}
void request_process(const clap_host_t*) {}
void request_callback(const clap_host_t*) { callback_requested = true; }

const clap_host_t host{CLAP_VERSION, nullptr, "gramophone clap-host", "Gramophone", "", "0.1",
                       get_extension, request_restart, request_process, request_callback};

// The parameter changes of one call.
struct Events {
    std::vector<clap_event_param_value_t> values;
    static uint32_t size(const clap_input_events_t* list) {
        return static_cast<uint32_t>(static_cast<Events*>(list->ctx)->values.size());
    }
    static const clap_event_header_t* get(const clap_input_events_t* list, uint32_t index) {
        return &static_cast<Events*>(list->ctx)->values[index].header;
    }
    void add(clap_id id, double value) {
        clap_event_param_value_t event{};
        event.header = {sizeof event, 0, CLAP_CORE_EVENT_SPACE_ID, CLAP_EVENT_PARAM_VALUE, 0};
        event.param_id = id;
        event.note_id = -1;
        event.port_index = event.channel = event.key = -1;
        event.value = value;
        values.push_back(event);
    }
};

bool ignore_event(const clap_output_events_t*, const clap_event_header_t*) { return true; }

[[noreturn]] void fail(const std::string& why) {
    std::fprintf(stderr, "clap-host: %s\n", why.c_str());
    std::exit(2);
}

struct Setting {
    std::string name;
    double from, to;
};

int64_t now_ns() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

std::string json_string(const std::string& text) {
    std::string out = "\"";
    for (char c : text) out += (c == '"' || c == '\\') ? std::string("\\") + c : std::string(1, c);
    return out + "\"";
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) fail("usage: clap-host PLUGIN.clap [--list | --in FILE --out FILE ...] (see the source)");
    std::string path = argv[1], in_path, out_path, trace_path, report_path;
    double rate = 48000;
    uint32_t block = 256;
    bool list = false, realtime = false, flush = false;
    double stall_at = -1, stall_ms = 0;
    std::vector<Setting> settings, ramps;
    for (int i = 2; i < argc; ++i) {
        const std::string arg = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) fail(arg + " needs a value");
            return argv[++i];
        };
        auto setting = [&](bool ramp) {
            const std::string text = value();
            const size_t eq = text.find('=');
            if (eq == std::string::npos) fail("expected NAME=VALUE, got " + text);
            const std::string number = text.substr(eq + 1);
            const size_t colon = number.find(':');
            if (ramp && colon == std::string::npos) fail("expected NAME=FROM:TO, got " + text);
            const double from = std::atof(number.c_str());
            return Setting{text.substr(0, eq), from, ramp ? std::atof(number.c_str() + colon + 1) : from};
        };
        if (arg == "--list") list = true;
        else if (arg == "--in") in_path = value();
        else if (arg == "--out") out_path = value();
        else if (arg == "--rate") rate = std::atof(value().c_str());
        else if (arg == "--block") block = static_cast<uint32_t>(std::atoi(value().c_str()));
        else if (arg == "--realtime") realtime = true;
        else if (arg == "--flush") flush = true;
        else if (arg == "--param") settings.push_back(setting(false));
        else if (arg == "--ramp") ramps.push_back(setting(true));
        else if (arg == "--stall") {
            const std::string text = value();
            stall_at = std::atof(text.c_str());
            stall_ms = std::atof(text.c_str() + text.find(':') + 1);
        }
        else if (arg == "--trace") trace_path = value();
        else if (arg == "--report") report_path = value();
        else fail("unknown option " + arg);
    }

    void* library = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (library == nullptr) fail(dlerror());
    const auto* entry = static_cast<const clap_plugin_entry_t*>(dlsym(library, "clap_entry"));
    if (entry == nullptr || !entry->init(path.c_str())) fail("no clap_entry in " + path);
    const auto* factory = static_cast<const clap_plugin_factory_t*>(entry->get_factory(CLAP_PLUGIN_FACTORY_ID));
    const clap_plugin_descriptor_t* descriptor = factory->get_plugin_descriptor(factory, 0);
    const clap_plugin_t* plugin = factory->create_plugin(factory, &host, descriptor->id);
    if (plugin == nullptr || !plugin->init(plugin)) fail("the plugin would not start");
    const auto* params = static_cast<const clap_plugin_params_t*>(plugin->get_extension(plugin, CLAP_EXT_PARAMS));
    const auto* latency = static_cast<const clap_plugin_latency_t*>(plugin->get_extension(plugin, CLAP_EXT_LATENCY));
    const auto* ports = static_cast<const clap_plugin_audio_ports_t*>(plugin->get_extension(plugin, CLAP_EXT_AUDIO_PORTS));
    if (params == nullptr || latency == nullptr || ports == nullptr) fail("the plugin lacks params, latency or audio ports");

    std::vector<clap_param_info_t> infos(params->count(plugin));
    for (uint32_t i = 0; i < infos.size(); ++i) params->get_info(plugin, i, &infos[i]);
    auto find = [&](const std::string& name) -> const clap_param_info_t& {
        for (const auto& info : infos) if (name == info.name) return info;
        fail("no parameter named " + name);
    };
    auto outputs_json = [&]() {
        std::string out = "{";
        for (const auto& info : infos) {
            if (!(info.flags & CLAP_PARAM_IS_READONLY)) continue;
            double v = 0;
            params->get_value(plugin, info.id, &v);
            out += (out.size() > 1 ? ", " : "") + json_string(info.name) + ": " + std::to_string(v);
        }
        return out + "}";
    };
    if (list) {
        for (const auto& info : infos) {
            std::printf("{\"id\": %u, \"name\": %s, \"min\": %.9g, \"max\": %.9g, \"default\": %.9g, \"output\": %s}\n",
                        info.id, json_string(info.name).c_str(), info.min_value, info.max_value, info.default_value,
                        (info.flags & CLAP_PARAM_IS_READONLY) ? "true" : "false");
        }
        plugin->destroy(plugin);
        entry->deinit();
        return 0;
    }

    clap_audio_port_info_t port{};
    ports->get(plugin, 0, true, &port);
    const uint32_t channels = port.channel_count;
    std::vector<float> input;
    if (FILE* f = std::fopen(in_path.c_str(), "rb")) {
        float sample;
        while (std::fread(&sample, sizeof sample, 1, f) == 1) input.push_back(sample);
        std::fclose(f);
    } else {
        fail("cannot read " + in_path);
    }

    Events events;
    const clap_input_events_t in_events{&events, Events::size, Events::get};
    const clap_output_events_t out_events{nullptr, ignore_event};
    for (const auto& s : settings) events.add(find(s.name).id, s.from);
    params->flush(plugin, &in_events, &out_events);  // before activation: the latency may depend on them
    events.values.clear();

    if (!plugin->activate(plugin, rate, 1, block)) fail("activate failed");
    const uint32_t plugin_latency = latency->get(plugin);
    plugin->start_processing(plugin);

    const size_t frames_in = input.size() / channels;
    const size_t frames = frames_in + (flush ? plugin_latency : 0);
    input.resize(frames * channels, 0.0f);
    std::vector<float> output(frames * channels);
    std::vector<float> in_planar(size_t{block} * channels), out_planar(size_t{block} * channels);
    std::vector<float*> in_ptr(channels), out_ptr(channels);
    for (uint32_t c = 0; c < channels; ++c) {
        in_ptr[c] = &in_planar[size_t{c} * block];
        out_ptr[c] = &out_planar[size_t{c} * block];
    }
    clap_audio_buffer_t in_buffer{in_ptr.data(), nullptr, channels, 0, 0};
    clap_audio_buffer_t out_buffer{out_ptr.data(), nullptr, channels, 0, 0};

    FILE* trace = trace_path.empty() ? nullptr : std::fopen(trace_path.c_str(), "w");
    std::vector<double> call_us;
    uint32_t late_calls = 0;  // real time: calls the host itself started over 1 ms behind schedule
    const int64_t start = now_ns();
    size_t next_trace = 0;
    const size_t trace_every = static_cast<size_t>(0.25 * rate);
    for (size_t done = 0; done < frames; done += block) {
        const uint32_t n = static_cast<uint32_t>(std::min<size_t>(block, frames - done));
        if (stall_at >= 0 && done >= stall_at * rate) {
            std::this_thread::sleep_for(std::chrono::microseconds(static_cast<int64_t>(stall_ms * 1000)));
            stall_at = -1;
        }
        if (realtime) {  // a call runs once its input is complete
            const int64_t due = start + static_cast<int64_t>((done + n) / rate * 1e9);
            const int64_t now = now_ns();
            if (now < due) {
                std::this_thread::sleep_for(std::chrono::nanoseconds(due - now));
            } else if (now - due > 1000000) {
                ++late_calls;
            }
        }
        for (uint32_t c = 0; c < channels; ++c)
            for (uint32_t i = 0; i < n; ++i) in_ptr[c][i] = input[(done + i) * channels + c];
        events.values.clear();
        for (const auto& r : ramps) events.add(find(r.name).id, r.from + (r.to - r.from) * (done + n) / frames);
        clap_process_t process{static_cast<int64_t>(done), n, nullptr, &in_buffer, &out_buffer, 1, 1,
                               &in_events, &out_events};
        const int64_t began = now_ns();
        plugin->process(plugin, &process);
        call_us.push_back((now_ns() - began) / 1e3);
        for (uint32_t c = 0; c < channels; ++c)
            for (uint32_t i = 0; i < n; ++i) output[(done + i) * channels + c] = out_ptr[c][i];
        if (callback_requested) {
            callback_requested = false;
            plugin->on_main_thread(plugin);
        }
        if (trace != nullptr && done + n >= next_trace) {
            next_trace += trace_every;
            std::fprintf(trace, "{\"t\": %.4f, \"wall\": %.4f, \"outputs\": %s}\n", (done + n) / rate,
                         (now_ns() - start) / 1e9, outputs_json().c_str());
            std::fflush(trace);
        }
    }
    const std::string final_outputs = outputs_json();
    plugin->stop_processing(plugin);
    plugin->deactivate(plugin);
    plugin->destroy(plugin);
    entry->deinit();
    if (trace != nullptr) std::fclose(trace);

    if (FILE* f = std::fopen(out_path.c_str(), "wb")) {
        std::fwrite(output.data(), sizeof(float), output.size(), f);
        std::fclose(f);
    } else {
        fail("cannot write " + out_path);
    }
    if (!report_path.empty()) {
        std::vector<double> sorted = call_us;
        std::sort(sorted.begin(), sorted.end());
        double mean = 0;
        for (double v : sorted) mean += v / sorted.size();
        const double p99 = sorted.empty() ? 0 : sorted[std::min(sorted.size() - 1, sorted.size() * 99 / 100)];
        FILE* f = std::fopen(report_path.c_str(), "w");
        if (f == nullptr) fail("cannot write " + report_path);
        std::fprintf(f,
                     "{\"latency\": %u, \"latency_changed\": %s, \"channels\": %u, \"frames\": %zu, \"calls\": %zu, "
                     "\"late_calls\": %u, \"process_us\": {\"mean\": %.2f, \"p99\": %.2f, \"max\": %.2f}, "
                     "\"seconds\": %.3f, \"outputs\": %s}\n",
                     plugin_latency, latency_changed ? "true" : "false", channels, frames, call_us.size(), late_calls,
                     mean, p99, sorted.empty() ? 0 : sorted.back(), (now_ns() - start) / 1e9, final_outputs.c_str());
        std::fclose(f);
    }
    return 0;
}
