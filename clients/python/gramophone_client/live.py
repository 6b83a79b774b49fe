"""The live client: a full-duplex sounddevice stream through the server, with a jitter buffer."""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from .client import Client, Status
from .errors import GramophoneError
from .jitter import JitterBuffer


class NoAudioDevice(GramophoneError):
    """PortAudio is missing or has no device that can open this stream."""


@dataclass(frozen=True)
class LiveOptions:
    """What the ``live`` command was asked for."""

    block_size: int = 512
    channels: int = 1
    input_device: int | str | None = None
    output_device: int | str | None = None
    sample_rate: int | None = None
    jitter_blocks: int = 2
    duration: float | None = None
    file: Path | None = None
    record: Path | None = None


def _sounddevice() -> Any:
    """The sounddevice module, or a one-line NoAudioDevice when PortAudio itself is missing."""
    try:
        import sounddevice
    except OSError as error:
        raise NoAudioDevice(f"no audio system: {error}") from None
    return sounddevice


def list_devices() -> str:
    """sounddevice's device table, or a one-line note that there is none."""
    sd = _sounddevice()
    devices = sd.query_devices()
    if len(devices) == 0:
        raise NoAudioDevice("no audio device found (is an audio server such as JACK or PipeWire running?)")
    return str(devices)


def device(spec: str | None) -> int | str | None:
    """A device index when ``spec`` is a number, else a name substring (None: the default device)."""
    return int(spec) if spec is not None and spec.isdigit() else spec


def _db(peak: float) -> str:
    return "  -inf" if peak <= 0 else f"{20 * math.log10(peak):6.1f}"


class LivePlayer:
    """Captures, sends, and plays replies ``delay`` blocks later (dry when a reply is missing)."""

    def __init__(self, client: Client, options: LiveOptions, say: Callable[[str], None]) -> None:
        self.client = client
        self.options = options
        self.say = say
        self._sd = _sounddevice()
        self._outgoing: queue.Queue[tuple[int, np.ndarray] | None] = queue.Queue(maxsize=256)
        self._recorded: queue.Queue[np.ndarray] = queue.Queue()
        self._seq = 0
        self._peaks = [0.0, 0.0]
        self.sample_rate = self._choose_rate()
        self._source = self._read_file() if options.file else None
        self.stream = self._open_stream()
        self.buffer: JitterBuffer | None = None

    def _read_file(self) -> np.ndarray:
        """The ``--file`` input at the stream's rate and channel count."""
        audio, rate = sf.read(self.options.file, dtype="float32", always_2d=True)
        if audio.shape[1] != self.options.channels:
            audio = np.repeat(audio.mean(axis=1, keepdims=True), self.options.channels, axis=1)
        if rate != self.sample_rate:
            audio = soxr.resample(audio, rate, self.sample_rate).astype(np.float32)
        return audio

    def _choose_rate(self) -> int:
        """``--rate``, else the input device's default rate."""
        if self.options.sample_rate:
            return self.options.sample_rate
        if len(self._sd.query_devices()) == 0:
            raise NoAudioDevice("no audio device found (is an audio server such as JACK or PipeWire running?)")
        try:
            info = self._sd.query_devices(self.options.input_device, "input")
        except (ValueError, self._sd.PortAudioError) as error:
            raise NoAudioDevice(f"no usable audio input device: {error}") from None
        return int(info["default_samplerate"])

    def _open_stream(self) -> Any:
        o = self.options
        try:
            return self._sd.Stream(
                samplerate=self.sample_rate, blocksize=o.block_size, channels=o.channels, dtype="float32",
                device=(o.input_device, o.output_device), callback=self._callback,
            )
        except (ValueError, self._sd.PortAudioError) as error:
            raise NoAudioDevice(f"cannot open the audio device at {self.sample_rate} Hz: {error}") from None

    def _callback(self, indata: np.ndarray, outdata: np.ndarray, frames: int, _time: Any, _status: Any) -> None:
        """The audio thread: never blocks on the network (a full send queue drops the block: it plays dry)."""
        if self._source is not None:
            start = self._seq * frames
            chunk = self._source[start:start + frames]
            captured = np.zeros_like(indata)
            captured[:len(chunk)] = chunk
        else:
            captured = indata
        seq = self._seq
        self._seq += 1
        if self.buffer is None:
            outdata.fill(0)
            return
        out, _wet = self.buffer.cycle(seq, captured)
        try:
            self._outgoing.put_nowait((seq, np.array(captured, copy=True)))
        except queue.Full:
            pass
        outdata[:] = out
        self._peaks[0] = max(self._peaks[0], float(np.abs(captured).max(initial=0.0)))
        self._peaks[1] = max(self._peaks[1], float(np.abs(out).max(initial=0.0)))
        if self.options.record:
            self._recorded.put(out)

    def _send_loop(self) -> None:
        while (item := self._outgoing.get()) is not None:
            try:
                self.client.send_block(*item)
            except GramophoneError:
                continue  # the link is down: the block will play dry, and the status line says so

    def run(self) -> None:
        """Connect, stream until the duration is over or Ctrl-C, then close everything."""
        o = self.options
        session = self.client.connect(self.sample_rate, o.channels, o.block_size)
        self.client.set_mode("live")
        self.buffer = JitterBuffer(session.latency_blocks + o.jitter_blocks, o.block_size, o.channels)
        self.client.on_audio = self.buffer.add_reply
        total_ms = 1000 * (self.buffer.delay * o.block_size) / self.sample_rate
        self.say(f"live: {self.sample_rate} Hz, {o.channels} ch, block {o.block_size}; server latency "
                 f"{session.latency_samples} samples, output delayed {self.buffer.delay} blocks ({total_ms:.0f} ms)")
        sender = threading.Thread(target=self._send_loop, name="gramophone-send", daemon=True)
        sender.start()
        writer = None
        if o.record:
            float_ok = sf.check_format(o.record.suffix[1:].upper(), "FLOAT")
            writer = sf.SoundFile(o.record, "w", self.sample_rate, o.channels, subtype="FLOAT" if float_ok else None)
        try:
            self.stream.start()
            end = None if o.duration is None else time.monotonic() + o.duration
            while end is None or time.monotonic() < end:
                time.sleep(1.0 if end is None else max(0.0, min(1.0, end - time.monotonic())))
                self._drain_record(writer)
                self.say(self._line())
        except KeyboardInterrupt:
            self.say("stopping")
        finally:
            self.stream.stop()
            self.stream.close()
            self._outgoing.put(None)
            sender.join(timeout=1.0)
            self._drain_record(writer)
            if writer is not None:
                writer.close()
            self._goodbye()

    def _drain_record(self, writer: sf.SoundFile | None) -> None:
        while writer is not None and not self._recorded.empty():
            writer.write(self._recorded.get_nowait())

    def _line(self) -> str:
        """One status line: levels since the last line, local counters, and the server's status."""
        buffer = self.buffer
        assert buffer is not None
        peaks, self._peaks = self._peaks, [0.0, 0.0]
        local = (f"in {_db(peaks[0])} dB  out {_db(peaks[1])} dB | wet {buffer.wet_blocks} dry {buffer.dry_blocks}"
                 f" late {buffer.late_replies}")
        try:
            status: Status | None = self.client.status(timeout=0.5)
        except GramophoneError as error:
            status = None
            reason = "connection lost" if self.client.lost else "no reply"
            return f"{local} | server: {reason} ({error}) - playing dry"
        self._reconnect_if_forgotten()
        return (f"{local} | server: {status.sessions} sessions, rtf {status.rtf_avg:.2f}/{status.rtf_peak:.2f},"
                f" {status.iterations_avg:.0f} it, latency {status.latency_ms:.0f} ms, late {status.late_chunks},"
                f" lost {status.lost_blocks}, queued {status.queued_blocks}")

    def _reconnect_if_forgotten(self) -> None:
        """A restarted server no longer knows this session: open a new one and keep streaming."""
        if not self.client.stream_failures:
            return
        self.client.stream_failures.clear()
        o = self.options
        try:
            session = self.client.connect(self.sample_rate, o.channels, o.block_size)
            self.client.set_mode("live")
        except GramophoneError as error:
            self.say(f"reconnect failed: {error}")
            return
        assert self.buffer is not None
        if session.latency_blocks + o.jitter_blocks > self.buffer.delay:
            self.say("reconnected, but the server's latency grew: restart the client to hear it wet again")
        else:
            self.say("reconnected")

    def _goodbye(self) -> None:
        buffer = self.buffer
        assert buffer is not None
        try:
            self.client.disconnect(timeout=0.5)
        except GramophoneError:
            pass
        self.say(f"stopped after {buffer.wet_blocks + buffer.dry_blocks} blocks: {buffer.dry_blocks} played dry"
                 f" ({buffer.late_replies} replies came too late)")
