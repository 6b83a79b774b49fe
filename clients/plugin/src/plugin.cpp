// Gramophone as a plugin: a client of `gramophone serve`, which does all the DSP. The DAW feeds it
// a track; it streams the audio to the server in fixed blocks, plays the answers back at a fixed
// latency reported to the host (the dry input when an answer is missing), and turns its knobs
// into /param messages. See clients/plugin/README.md and docs/daw.md.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "DistrhoPlugin.hpp"
#include "audio_path.hpp"
#include "link.hpp"
#include "params.hpp"
#include "timing.hpp"

START_NAMESPACE_DISTRHO

using namespace gramophone;

namespace {

// GRAMOPHONE_SERVER=A.B.C.D:PORT starts a new instance's address parameters there (a studio whose
// server runs elsewhere); a project's saved values then win, as for any parameter.
void address_from_environment(int address[4], int& port) {
    const char* value = std::getenv("GRAMOPHONE_SERVER");
    int a[4], p;
    char end;
    if (value == nullptr || std::sscanf(value, "%d.%d.%d.%d:%d%c", &a[0], &a[1], &a[2], &a[3], &p, &end) != 5) return;
    for (int i = 0; i < 4; ++i) if (a[i] < 0 || a[i] > 255) return;
    if (p < 1 || p > 65535) return;
    std::copy(a, a + 4, address);
    port = p;
}

void set_enumeration(Parameter& parameter, std::initializer_list<const char*> labels) {
    auto* values = new ParameterEnumerationValue[labels.size()];  // DPF owns and frees them
    int i = 0;
    for (const char* label : labels) {
        values[i] = ParameterEnumerationValue(static_cast<float>(i), label);
        ++i;
    }
    parameter.enumValues.count = static_cast<uint8_t>(labels.size());
    parameter.enumValues.restrictedMode = true;
    parameter.enumValues.values = values;
}

}  // namespace

class GramophonePlugin : public Plugin {
public:
    GramophonePlugin() : Plugin(kParamCount, 0, 0), path_(controls_, report_) {
        for (uint32_t i = 0; i < kServerParamCount; ++i) {
            values_[i] = kServerParams[i].def;
            controls_.params[i] = kServerParams[i].def;
        }
        values_[kParamStyle] = 0.0f;
        values_[kParamLatency] = kDefaultLatencyMs;
        values_[kParamMode] = kModeAuto;
        int address[4] = {kDefaultAddress[0], kDefaultAddress[1], kDefaultAddress[2], kDefaultAddress[3]};
        int port = kDefaultPort;
        address_from_environment(address, port);
        for (int i = 0; i < 4; ++i) setParameterValue(kParamAddress1 + i, static_cast<float>(address[i]));
        setParameterValue(kParamPort, static_cast<float>(port));
        if (!isDummyInstance()) link_ = std::make_unique<Link>(controls_, report_);  // DPF's describing instance stays offline
        setLatency(latency_frames(getSampleRate()));
    }

protected:
    const char* getLabel() const override { return GRAMOPHONE_CHANNELS == 1 ? "gramophone_mono" : "gramophone"; }
    const char* getDescription() const override {
        return "Neural style transfer by a Gramophone server (gramophone serve): streams the track to it over "
               "OSC and plays the answers back at a fixed, reported latency, dry when the server is away.";
    }
    const char* getMaker() const override { return "Gramophone"; }
    const char* getLicense() const override { return "MIT"; }
    uint32_t getVersion() const override { return d_version(0, 1, 0); }
    int64_t getUniqueId() const override { return d_cconst('G', 'r', 'm', GRAMOPHONE_CHANNELS == 1 ? 'm' : 's'); }

    void initAudioPort(bool input, uint32_t index, AudioPort& port) override {
        port.groupId = GRAMOPHONE_CHANNELS == 1 ? kPortGroupMono : kPortGroupStereo;
        Plugin::initAudioPort(input, index, port);
    }

    void initParameter(uint32_t index, Parameter& p) override {
        if (index < kServerParamCount) {
            const ServerParam& s = kServerParams[index];
            if (index == kBypassParam) {
                p.initDesignation(kParameterDesignationBypass);
                return;
            }
            p.hints = kParameterIsAutomatable | (s.integer ? kParameterIsInteger : 0);
            p.name = s.name;
            p.symbol = s.symbol;
            p.unit = s.unit;
            p.ranges.min = s.min;
            p.ranges.max = s.max;
            p.ranges.def = s.def;
            return;
        }
        switch (index) {
            case kParamStyle:
                init(p, "Style slot", "style", kParameterIsAutomatable | kParameterIsInteger, 0, kStyleSlots, 0);
                p.description = "N picks the N-th name of the server's /style/list (sorted); 0 leaves the server's style";
                break;
            case kParamLatency:
                init(p, "Plugin latency", "latency_ms", 0, kMinLatencyMs, kMaxLatencyMs, kDefaultLatencyMs, "ms");
                p.description = "The fixed latency reported to the host; the server's latency and a margin must fit inside";
                break;
            case kParamMode:
                init(p, "Mode", "mode", kParameterIsInteger, 0, 2, kModeAuto);
                set_enumeration(p, {"auto", "live", "render"});
                p.description = "auto: render (wait for the server) when the host runs faster than real time";
                break;
            case kParamAddress1:
            case kParamAddress2:
            case kParamAddress3:
            case kParamAddress4: {
                const int part = static_cast<int>(index - kParamAddress1);
                static const char* const names[] = {"Server address 1", "Server address 2", "Server address 3",
                                                    "Server address 4"};
                static const char* const symbols[] = {"server_ip1", "server_ip2", "server_ip3", "server_ip4"};
                init(p, names[part], symbols[part], kParameterIsInteger, 0, 255, kDefaultAddress[part]);
                p.description = "The server's IPv4 address, one number of four (default 127.0.0.1)";
                break;
            }
            case kParamPort:
                init(p, "Server port", "server_port", kParameterIsInteger, 1, 65535, kDefaultPort);
                p.description = "The server's UDP port (gramophone serve --port; default 57300)";
                break;
            case kParamStatus:
                init(p, "Status", "status", kParameterIsOutput | kParameterIsInteger, 0, kStatusRefused, 0);
                set_enumeration(p, {"no server", "connecting", "live", "render", "latency too small", "refused"});
                break;
            case kParamConnected:
                init(p, "Connected", "connected", kParameterIsOutput | kParameterIsBoolean | kParameterIsInteger, 0, 1, 0);
                break;
            case kParamServerLatency:
                init(p, "Server latency", "server_latency_ms", kParameterIsOutput, 0, 10000, 0, "ms");
                break;
            case kParamNeededLatency:
                init(p, "Needed latency", "needed_latency_ms", kParameterIsOutput, 0, 10000, 0, "ms");
                p.description = "The smallest latency setting the server's latency fits, with the host's block size";
                break;
            case kParamLateBlocks:
                init(p, "Late blocks", "late_blocks", kParameterIsOutput | kParameterIsInteger, 0, 1e9f, 0);
                p.description = "Blocks played dry while connected (late, lost or answered dry), this session";
                break;
            case kParamArrivalP99:
                init(p, "Arrival p99", "arrival_p99_ms", kParameterIsOutput, -2000, 2000, 0, "ms");
                p.description = "99th percentile of wet answers' arrival against when they were needed (negative: early)";
                break;
            case kParamArrivalWorst:
                init(p, "Arrival worst", "arrival_worst_ms", kParameterIsOutput, -2000, 2000, 0, "ms");
                break;
        }
    }

    float getParameterValue(uint32_t index) const override {
        const int status = report_.status.load();
        const bool connected = status == kStatusLive || status == kStatusRender || status == kStatusLatencyTooSmall;
        switch (index) {
            case kParamStatus: return static_cast<float>(status);
            case kParamConnected: return connected ? 1.0f : 0.0f;
            case kParamServerLatency: return connected ? report_.server_latency_ms.load() : 0.0f;
            case kParamNeededLatency: return connected ? report_.needed_latency_ms.load() : 0.0f;
            case kParamLateBlocks: return static_cast<float>(path_.late_blocks());
            case kParamArrivalP99: return report_.arrival_p99_ms.load();
            case kParamArrivalWorst: return report_.arrival_worst_ms.load();
            default: return index < kParamStatus ? values_[index].load() : 0.0f;
        }
    }

    // May come from the audio thread (automation): atomics only, no allocation.
    void setParameterValue(uint32_t index, float value) override {
        if (index >= kParamStatus) return;
        values_[index] = value;
        if (index < kServerParamCount) controls_.params[index].store(value, std::memory_order_relaxed);
        const int whole = static_cast<int>(std::lround(value));
        if (index == kParamStyle) controls_.style_slot.store(whole);
        if (index >= kParamAddress1 && index <= kParamAddress4) controls_.address[index - kParamAddress1].store(whole);
        if (index == kParamPort) controls_.port.store(whole);
        if (index == kParamLatency) setLatency(latency_frames(getSampleRate()));  // applies at the next activation
    }

    void activate() override {
        if (!link_) return;
        const double rate = getSampleRate();
        Format format;
        format.sample_rate = rate;
        format.channels = GRAMOPHONE_CHANNELS;
        format.block = plugin_block(rate);
        format.host_block = std::max<uint32_t>(getBufferSize(), 1);
        format.crossfade = crossfade_frames(format.block);
        format.latency = latency_frames(rate);
        link_->activate(format);
        path_.prepare(format, link_->ring(), link_->slots(), mode());
    }

    void deactivate() override {
        if (link_) link_->deactivate();
    }

    void run(const float** inputs, float** outputs, uint32_t frames) override {
        path_.process(inputs, outputs, frames, mode(), values_[kBypassParam] > 0.5f);
    }

    void sampleRateChanged(double rate) override { setLatency(latency_frames(rate)); }

private:
    static void init(Parameter& p, const char* name, const char* symbol, uint32_t hints, float min, float max,
                     float def, const char* unit = "") {
        p.name = name;
        p.symbol = symbol;
        p.hints = hints;
        p.ranges.min = min;
        p.ranges.max = max;
        p.ranges.def = def;
        p.unit = unit;
    }

    uint32_t latency_frames(double rate) const {
        return static_cast<uint32_t>(std::lround(values_[kParamLatency].load() * rate / 1000.0));
    }

    Mode mode() const { return static_cast<Mode>(std::lround(values_[kParamMode].load())); }

    Controls controls_;
    Report report_;
    std::atomic<float> values_[kParamStatus];  // the host's inputs, as it set them
    AudioPath path_;
    std::unique_ptr<Link> link_;  // none in DPF's dummy instance

    DISTRHO_DECLARE_NON_COPYABLE_WITH_LEAK_DETECTOR(GramophonePlugin)
};

Plugin* createPlugin() { return new GramophonePlugin(); }

END_NAMESPACE_DISTRHO
