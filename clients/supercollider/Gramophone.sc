// Gramophone: neural style transfer of audio through a running `gramophone serve`, over OSC.
//
// Every method that waits for the server must run inside a Routine (`fork { ... }`), like
// `s.sync`. Protocol: docs/protocol.md. Install: copy this file into
// Platform.userExtensionDir (or add its folder to the class library) and recompile.
//
// fork {
//     g = Gramophone("127.0.0.1", 57300);
//     g.param(\style_weight, 2).postln;         // the applied (clamped) value
//     g.styleSelect(\voice);
//     g.processBuffer(b, { |out| out.play });   // b: a Buffer on the server, mono or stereo
//     g.free;
// }

GramophoneError : Error {
	errorString { ^"Gramophone: " ++ what }
}

Gramophone {
	var <addr, <blockSize, <>timeout, <sessionId, <latency, <params;

	*new { |host = "127.0.0.1", port = 57300, blockSize = 1024, timeout = 30|
		^super.new.init(host, port, blockSize, timeout)
	}

	init { |host, port, argBlockSize, argTimeout|
		addr = NetAddr(host, port);
		blockSize = argBlockSize;
		timeout = argTimeout;
		params = IdentityDictionary.new;
	}

	// -- stream ----------------------------------------------------------------------------

	// Open a session; `latency` is then the delay the server adds, in samples.
	connect { |sampleRate = 48000, channels = 1, mode = \render|
		var reply = this.prRequest('/connect', [sampleRate.asInteger, channels.asInteger, blockSize], '/connected');
		sessionId = reply[1];
		latency = reply[2].asInteger;
		this.mode(mode);
	}

	disconnect { this.prRequest('/disconnect', [], '/done'); sessionId = nil }

	// \live (a deadline per chunk, dry when late) or \render (full quality).
	mode { |name| this.prRequest('/mode', [name.asString], '/done') }

	reset { this.prRequest('/reset', [], '/done') }

	// Stream an interleaved array through the server; returns the stylised array, aligned.
	processArray { |array, sampleRate = 48000, channels = 1, mode = \render|
		var frames = blockSize * channels, n = (array.size / frames).roundUp.asInteger;
		var out = FloatArray.newClear(n * frames), received = 0, cond = CondVar.new, window, audio;
		this.connect(sampleRate, channels, mode);
		window = (latency / blockSize).roundUp.asInteger + 8;
		audio = OSCFunc({ |msg|
			var seq = msg[1];
			if(seq < n) {
				out.overWrite(FloatArray.newFrom(msg[2..]), seq * frames);
				received = received + 1;
				cond.signalOne;
			};
		}, '/audio', addr);
		protect {
			n.do { |seq|
				var block = array.copyRange(seq * frames, (seq + 1) * frames - 1).asArray;
				block = block ++ Array.fill(frames - block.size, 0.0);
				if(cond.waitFor(timeout, { seq - received < window }).not) {
					GramophoneError("the server stopped answering after % of % blocks".format(received, n)).throw;
				};
				addr.sendMsg('/content', seq, *block);
			};
			this.prRequest('/flush', [], '/done');
			if(cond.waitFor(timeout, { received >= n }).not) {
				GramophoneError("% of % blocks came back".format(received, n)).throw;
			};
			this.disconnect;
		} { audio.free };
		^out.copyRange(0, array.size - 1)
	}

	// Stylise a Buffer; `action` gets a new Buffer with the result (needs a booted server).
	processBuffer { |buffer, action, mode = \render|
		buffer.loadToFloatArray(action: { |array|
			fork {
				var out = this.processArray(array, buffer.sampleRate, buffer.numChannels, mode);
				Buffer.loadCollection(buffer.server, out, buffer.numChannels, action);
			}
		})
	}

	// -- parameters and styles -------------------------------------------------------------

	// Set (with a value) or read a parameter; returns the value the server applied.
	param { |name, value|
		var address = ("/param/" ++ name).asSymbol;
		var reply = this.prRequest(address, value.isNil.if({ [] }, { [value.asFloat] }), address);
		params[name.asSymbol] = reply[1];
		^reply[1]
	}

	// Every parameter: name -> (value: , min: , max: , default: ).
	allParams {
		var rows = IdentityDictionary.new;
		var row = OSCFunc({ |msg| rows[msg[1]] = (value: msg[2], min: msg[3], max: msg[4], default: msg[5]) }, '/params/reply', addr);
		protect { this.prRequest('/params', [], '/done') } { row.free };
		^rows
	}

	styleSelect { |name| this.prRequest('/style/select', [name.asString], '/done') }
	styleLoad { |name, file| this.prRequest('/style/load', [name.asString, file.asString], '/done') }
	// pairs: [\a, 0.7, \b, 0.3]
	styleMix { |pairs| this.prRequest('/style/mix', pairs.collect { |x, i| i.even.if({ x.asString }, { x.asFloat }) }, '/done') }
	styleList { ^this.prRequest('/style/list', [], '/style/list/reply').drop(1) }
	styleDelete { |name| this.prRequest('/style/delete', [name.asString], '/done') }

	// -- health ----------------------------------------------------------------------------

	status {
		var r = this.prRequest('/status', [], '/status/reply');
		^(sessions: r[1], rtfAvg: r[2], rtfPeak: r[3], iterationsAvg: r[4], latencyMs: r[5],
			lateChunks: r[6], lostBlocks: r[7], queuedBlocks: r[8], lateBlocks: r[9])
	}

	// Round-trip time in seconds.
	ping {
		var start = Main.elapsedTime;
		this.prRequest('/ping', [], '/pong');
		^Main.elapsedTime - start
	}

	free { if(sessionId.notNil) { addr.sendMsg('/disconnect'); sessionId = nil } }

	// -- internals -------------------------------------------------------------------------

	// Send one message and wait for `replyAddress` (a /done must name the request); /fail throws.
	prRequest { |address, args, replyAddress|
		var reply, cond = CondVar.new, ok, fail;
		var matches = { |msg| replyAddress != '/done' or: { msg[1].asString == address.asString } };
		ok = OSCFunc({ |msg| if(matches.(msg)) { reply = msg; cond.signalOne } }, replyAddress, addr);
		fail = OSCFunc({ |msg| if(msg[1].asString == address.asString) { reply = msg; cond.signalOne } }, '/fail', addr);
		protect {
			addr.sendMsg(address, *args);
			cond.waitFor(timeout, { reply.notNil });
		} { ok.free; fail.free };
		if(reply.isNil) { GramophoneError("no reply to % within % s: is `gramophone serve` running on %:%?"
			.format(address, timeout, addr.ip, addr.port)).throw };
		if(reply[0] == '/fail') { GramophoneError("% %".format(reply[1], reply[2])).throw };
		^reply
	}
}
