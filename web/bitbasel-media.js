// BitBasel Media Server: browser client (plain ES module, no build step, no dependencies).
//
// Speaks the server's signaling protocol (protocol 1, docs/PROTOCOL.md) over a
// WebSocket at <server>/ws and carries media over one RTCPeerConnection per
// signaling session.
//
//   import { goLive, watch } from "https://media.example.com/static/bitbasel-media.js";
//   const host = goLive({ roomId, token, userId, stream });          // publish camera + mic
//   const viewer = watch({ roomId, token, userId, videoElement });    // play the room
//
// Each call returns a session (an EventTarget) with the events
//   joined  {room_id, peer_id, role, viewer_count, has_host, protocol}
//   room    {viewer_count, has_host}
//   state   {state, previous}   state: "connecting" | "live" | "offline" | "closed"
//   stopped {reason, room_id}   the room was stopped (api, idle, shutdown, crashed)
//   error   {code, message, fatal}
//   track   {track, streams}    (viewer) a remote track arrived
//   firstframe {ms}             (viewer) first video frame shown, ms after watch()
//   reconnect {reason, url}     the server's node is stopping: the client reconnects to `url`
//   quality {layer, width, height, reason}  (viewer) the layer it is sent changed
//   layers  {active}            (host) the simulcast layers viewers need (the others are paused)
// and the methods close() (alias stop()), stats(), setQuality(q) (viewer) and the read-only
// fields state, viewerCount, hasHost, peerId, closeReason, timings, quality, layers.
// A host publishes three simulcast layers (rids q, h, f: a quarter, half and full size) when
// its camera gives at least 540 lines, two from 360, else one; `simulcast: false` publishes one.
// `codec: "H264"` publishes H.264 instead of VP8 (viewers negotiate both and watch either).
// See docs/JS_CLIENT.md.

export const PROTOCOL_VERSION = 1;

/** Close codes after which the client must not reconnect (PROTOCOL.md). */
export const FINAL_CLOSE_CODES = Object.freeze([4401, 4403, 4404, 4410, 4451]);
/** Close codes after which a retry would only repeat the refusal: not retried either. */
export const NOT_RETRIED_CLOSE_CODES = Object.freeze([4400, 4415]);

export const KEEPALIVE_INTERVAL_MS = 20000;
/** A session whose peer connection is not connected this long after its offer is started anew. */
const DEFAULT_MEDIA_TIMEOUT_MS = 30000;
/** A peer connection `disconnected` this long restarts ICE (a new path, same session). */
export const ICE_RESTART_AFTER_DISCONNECTED_MS = 3000;

/** A viewer's choices for setQuality (docs/PROTOCOL.md `set_quality`). */
export const QUALITIES = Object.freeze(["auto", "high", "medium", "low", "audio_only"]);

/**
 * The simulcast encodings for a camera track: three layers (a quarter, half and full size) from
 * 540 lines, two from 360, none (one stream) below or when asked, lowest first (the server
 * names layers by size: low, medium, high).
 */
export function simulcastEncodings(track, wanted = true) {
  if (!wanted || !track || track.kind !== "video") return null;
  const settings = typeof track.getSettings === "function" ? track.getSettings() : {};
  const height = settings.height || 0;
  if (height >= 540) {
    return [
      { rid: "q", scaleResolutionDownBy: 4, maxBitrate: 200_000 },
      { rid: "h", scaleResolutionDownBy: 2, maxBitrate: 700_000 },
      { rid: "f", scaleResolutionDownBy: 1, maxBitrate: 2_500_000 },
    ];
  }
  if (height >= 360) {
    return [
      { rid: "h", scaleResolutionDownBy: 2, maxBitrate: 400_000 },
      { rid: "f", scaleResolutionDownBy: 1, maxBitrate: 1_500_000 },
    ];
  }
  return null;
}

const DEFAULT_RECONNECT = Object.freeze({
  initialDelayMs: 500,
  maxDelayMs: 15000,
  factor: 2,
  maxAttempts: Infinity,
});

const CODE_OF_CLOSE = {
  4400: "bad_message",
  4401: "unauthorized",
  4403: "forbidden",
  4404: "room_not_found",
  4408: "timeout",
  4409: "host_taken",
  4410: "replaced",
  4415: "unsupported_codec",
  4429: "room_full",
  4451: "kicked",
  4495: "dtls_failed",
  1008: "rate_limited",
  1009: "too_large",
};

/** The signaling URL for a server: accepts "", http(s)://, ws(s):// URLs, with or without a path prefix. */
export function signalingUrl(serverUrl) {
  let base;
  if (serverUrl) {
    base = new URL(serverUrl, globalThis.location ? globalThis.location.href : undefined);
  } else {
    // default: the server this module was loaded from (…/static/bitbasel-media.js -> …/)
    base = new URL("..", import.meta.url);
  }
  if (base.protocol === "http:") base.protocol = "ws:";
  else if (base.protocol === "https:") base.protocol = "wss:";
  else if (base.protocol !== "ws:" && base.protocol !== "wss:") {
    throw new TypeError(`serverUrl must be an http(s) or ws(s) URL, got ${serverUrl}`);
  }
  let path = base.pathname.replace(/\/+$/, "");
  if (!path.endsWith("/ws")) path += "/ws";
  base.pathname = path;
  base.search = "";
  base.hash = "";
  return base.toString();
}

/** Publish `stream` (camera + microphone) to a room as its host. */
export function goLive(options) {
  if (!options || !options.stream) throw new TypeError("goLive: options.stream (a MediaStream) is required");
  return new MediaSession("host", options);
}

/** Watch a room: the remote stream is attached to `videoElement` (if given). */
export function watch(options) {
  return new MediaSession("viewer", options || {});
}

function eventOf(type, detail) {
  return new CustomEvent(type, { detail });
}

function now() {
  return globalThis.performance ? performance.now() : Date.now();
}

/**
 * Offer only the given codecs on a transceiver, in that order (a host: the one it publishes;
 * a viewer: every codec the server may forward, so it can watch whichever its host sends).
 * Keeps the retransmission format (rtx) for video. Best effort: browsers without
 * setCodecPreferences / getCapabilities are left alone.
 */
function preferCodec(transceiver, kind, mimeTypes) {
  try {
    if (typeof transceiver.setCodecPreferences !== "function") return;
    const caps = globalThis.RTCRtpReceiver && RTCRtpReceiver.getCapabilities
      ? RTCRtpReceiver.getCapabilities(kind) : null;
    if (!caps || !caps.codecs) return;
    const preferred = mimeTypes.flatMap((mimeType) =>
      caps.codecs.filter((c) => c.mimeType.toLowerCase() === mimeType.toLowerCase()));
    if (preferred.length === 0) return;
    const extras = kind === "video"
      ? caps.codecs.filter((c) => c.mimeType.toLowerCase() === "video/rtx")
      : [];
    transceiver.setCodecPreferences([...preferred, ...extras]);
  } catch (err) {
    // not fatal: the server picks VP8/Opus from the full list anyway
    console.warn("bitbasel-media: setCodecPreferences failed", err);
  }
}

class MediaSession extends EventTarget {
  constructor(role, options) {
    super();
    if (!options.roomId) throw new TypeError("roomId is required");
    this.role = role;
    this.roomId = String(options.roomId);
    this.token = options.token || null;
    this.userId = options.userId != null && options.userId !== "" ? String(options.userId) : null;
    this.stream = options.stream || null;
    this.videoElement = options.videoElement || null;
    this.iceServers = Array.isArray(options.iceServers) ? options.iceServers : [];
    // "relay": media only through TURN (the server's `joined.ice_servers`), e.g. to check a TURN set-up
    this.iceTransportPolicy = options.iceTransportPolicy === "relay" ? "relay" : "all";
    this._sessionIceServers = []; // from `joined`: STUN/TURN with credentials minted for the session
    this.url = signalingUrl(options.serverUrl);
    this.reconnect = { ...DEFAULT_RECONNECT, ...(options.reconnect || {}) };
    this.mediaTimeoutMs = options.mediaTimeoutMs || DEFAULT_MEDIA_TIMEOUT_MS;
    this.log = options.log || (() => {});
    this.simulcast = options.simulcast !== false; // host: publish layers when the camera allows
    // host: the video codec to publish, "VP8" (default) or "H264" (viewers receive either)
    this.codec = String(options.codec || "VP8").toUpperCase() === "H264" ? "H264" : "VP8";
    this.quality = null; // viewer: the latest `quality` message ({layer, width, height, reason})
    this.layers = null; // host: the rids viewers need (the latest `layers` message)
    this._wantedQuality = QUALITIES.includes(options.quality) ? options.quality : "auto";
    this._videoSender = null;

    this.state = "connecting";
    this.viewerCount = 0;
    this.hasHost = false;
    this.peerId = null;
    this.closeReason = null; // {code, reason} once closed
    this.remoteStream = null;
    this.timings = { started: now() };

    this._ws = null;
    this._pc = null;
    this._joined = false;
    this._offerSent = false;
    this._pendingCandidates = [];
    this._keepalive = null;
    this._reconnectTimer = null;
    this._attempt = 0;
    this._closed = false;
    this._generation = 0;
    this._mediaTimer = null;
    this._sentEndOfCandidates = false;
    this._disconnectedTimer = null;
    this._iceRestartedSinceConnected = false;
    this.iceRestarts = 0;
    // back online: do not wait out the backoff; a live session moves to the new network
    this._onOnline = () => {
      if (this._closed) return;
      if (this._reconnectTimer) {
        clearTimeout(this._reconnectTimer);
        this._reconnectTimer = null;
        this._connect();
      } else {
        this.restartIce("network change").catch((err) => this.log("ICE restart failed:", err));
      }
    };
    if (globalThis.addEventListener) globalThis.addEventListener("online", this._onOnline);

    if (this.videoElement && role === "viewer") {
      this.videoElement.playsInline = true;
      this.videoElement.autoplay = true;
    }
    this._connect();
  }

  // ---- public API -----------------------------------------------------------------------

  /**
   * Restart ICE on the current peer connection: a new offer with new ICE credentials in the
   * same session (PROTOCOL.md, "ICE restart"); media moves to whatever path works now.
   * Done by itself after ICE_RESTART_AFTER_DISCONNECTED_MS `disconnected`, on `failed` and
   * on a network change. Resolves to whether an offer was sent.
   */
  async restartIce(why = "requested") {
    const pc = this._pc;
    const generation = this._generation;
    if (!pc || this._closed || !this._offerSent || pc.signalingState !== "stable") return false;
    const current = () => generation === this._generation && !this._closed && this._pc === pc;
    this.log("ICE restart:", why);
    this.iceRestarts += 1;
    this._iceRestartedSinceConnected = true;
    this._sentEndOfCandidates = false;
    const offer = await pc.createOffer({ iceRestart: true });
    if (!current() || pc.signalingState !== "stable") return false;
    await pc.setLocalDescription(offer);
    if (!current()) return false;
    this._send({ type: "offer", sdp: pc.localDescription.sdp });
    this._armMediaTimer(pc, current); // not connected again in time: a new session
    return true;
  }

  /** The current RTCPeerConnection (a new one per signaling session), or null. */
  get peerConnection() {
    return this._pc;
  }

  /** Leave the room and release the peer connection. Does not stop the caller's tracks. */
  close() {
    if (this._closed) return;
    this._finish({ code: 1000, reason: "closed" }, true);
  }

  stop() {
    this.close();
  }

  /**
   * A summary of the peer connection's statistics:
   *   {role, state, connectionState, video: {...}, audio: {...}, candidatePair: {...}, report}
   * Viewer: inbound-rtp per kind (framesDecoded, frameWidth, frameHeight,
   * framesPerSecond, packetsReceived, packetsLost, bytesReceived, totalSamplesReceived, jitter).
   * Host: outbound-rtp per kind (framesEncoded, frameWidth, frameHeight, framesPerSecond,
   * packetsSent, bytesSent, targetBitrate, qualityLimitationReason).
   */
  async stats() {
    const summary = {
      role: this.role,
      state: this.state,
      connectionState: this._pc ? this._pc.connectionState : "closed",
      video: null,
      audio: null,
      candidatePair: null,
      report: null,
    };
    if (!this._pc) return summary;
    const report = await this._pc.getStats();
    summary.report = report;
    const wanted = this.role === "viewer" ? "inbound-rtp" : "outbound-rtp";
    report.forEach((s) => {
      if (s.type === wanted && (s.kind === "video" || s.kind === "audio")) {
        const previous = summary[s.kind];
        // a host may have several outbound entries (simulcast); keep the biggest
        if (!previous || (s.bytesSent || s.bytesReceived || 0) > (previous.bytesSent || previous.bytesReceived || 0)) {
          summary[s.kind] = { ...s };
        }
      } else if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") {
        summary.candidatePair = { ...s };
      }
    });
    return summary;
  }

  // ---- state --------------------------------------------------------------------------------

  _setState(state) {
    if (this.state === state || this.state === "closed") return;
    const previous = this.state;
    this.state = state;
    this.log("state", previous, "->", state);
    this.dispatchEvent(eventOf("state", { state, previous }));
  }

  _updateState() {
    if (this._closed) return;
    const pcState = this._pc ? this._pc.connectionState : "new";
    if (!this._joined || pcState !== "connected") {
      // viewer joined with no host to show: offline rather than connecting
      if (this.role === "viewer" && this._joined && !this.hasHost) this._setState("offline");
      else this._setState("connecting");
      return;
    }
    if (this.role === "host") this._setState("live");
    else this._setState(this.hasHost ? "live" : "offline");
  }

  _error(code, message, fatal = false) {
    this.log("error", code, message);
    this.dispatchEvent(eventOf("error", { code, message, fatal }));
  }

  // ---- signaling --------------------------------------------------------------------------

  _connect() {
    const generation = ++this._generation;
    this._joined = false;
    this._offerSent = false;
    this._pendingCandidates = [];
    this._stopped = false;
    this._updateState();
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (err) {
      this._error("connect_failed", String(err), true);
      this._finish({ code: 0, reason: "connect_failed" }, false);
      return;
    }
    this._ws = ws;
    const current = () => generation === this._generation && !this._closed;

    ws.onopen = () => {
      if (!current()) return;
      this.timings.wsOpen ??= now();
      const join = { type: "join", room_id: this.roomId, role: this.role };
      if (this.token) join.token = this.token;
      if (this.userId) join.user_id = this.userId;
      this._send(join);
      this._keepalive = setInterval(() => this._send({ type: "ping" }), KEEPALIVE_INTERVAL_MS);
    };
    ws.onmessage = (event) => {
      if (!current()) return;
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        this._error("bad_message", "the server sent a frame that is not JSON");
        return;
      }
      this._onMessage(message, generation).catch((err) => {
        if (current()) this._error("client_error", String(err && err.message ? err.message : err));
      });
    };
    ws.onerror = () => {
      // a close event always follows; nothing to do here
    };
    ws.onclose = (event) => {
      if (!current()) return;
      this._onSocketClosed(event.code, event.reason);
    };
  }

  _send(message) {
    const ws = this._ws;
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message));
  }

  async _onMessage(message, generation) {
    switch (message.type) {
      case "joined":
        this._attempt = 0; // a good join resets the backoff
        this._joined = true;
        this.peerId = message.peer_id;
        this._sessionIceServers = Array.isArray(message.ice_servers) ? message.ice_servers : [];
        this.viewerCount = message.viewer_count;
        this.hasHost = message.has_host;
        this.timings.joined ??= now();
        // a reconnected viewer asks again for what it chose
        if (this.role === "viewer" && this._wantedQuality !== "auto") {
          this._send({ type: "set_quality", quality: this._wantedQuality });
        }
        this.dispatchEvent(eventOf("joined", message));
        this.dispatchEvent(eventOf("room", { viewer_count: message.viewer_count, has_host: message.has_host }));
        this._updateState();
        await this._startPeerConnection(generation);
        break;
      case "answer":
        if (!this._pc || generation !== this._generation) return;
        this.timings.answer ??= now();
        await this._pc.setRemoteDescription({ type: "answer", sdp: message.sdp });
        // an ICE restart answered while the connection stayed up: a later failure may restart again
        if (this._pc && this._pc.connectionState === "connected") this._iceRestartedSinceConnected = false;
        break;
      case "room":
        this.viewerCount = message.viewer_count;
        this.hasHost = message.has_host;
        this.dispatchEvent(eventOf("room", { viewer_count: message.viewer_count, has_host: message.has_host }));
        this._updateState();
        break;
      case "stopped":
        this._stopped = true;
        this.dispatchEvent(eventOf("stopped", { reason: message.reason, room_id: message.room_id }));
        this._finish({ code: 1000, reason: `stopped:${message.reason}` }, false);
        break;
      case "error": {
        if (message.code === "bad_sdp" && this._pc && this._pc.signalingState === "have-local-offer" && this._pc.remoteDescription) {
          // a refused ICE restart: the session and its media go on as they were
          await this._pc.setLocalDescription({ type: "rollback" });
        }
        const fatal = this._isFatalCode(message.code);
        this._error(message.code, message.message, fatal);
        break;
      }
      case "pong":
        this.timings.lastPong = now();
        break;
      case "quality":
        this.quality = {
          layer: message.layer ?? null,
          width: message.width ?? null,
          height: message.height ?? null,
          reason: message.reason,
        };
        this.dispatchEvent(eventOf("quality", this.quality));
        break;
      case "layers":
        this.layers = Array.isArray(message.active) ? message.active.map(String) : [];
        this.dispatchEvent(eventOf("layers", { active: this.layers }));
        await this._applyLayers(this.layers);
        break;
      case "reconnect":
        // this node is stopping (a 1012 close follows): the next connections go to the node it names
        if (typeof message.url === "string" && /^wss?:\/\//.test(message.url)) this.url = message.url;
        this.dispatchEvent(eventOf("reconnect", { reason: message.reason, url: message.url ?? null }));
        break;
      default:
        // unknown server messages are ignored (the protocol may grow)
        break;
    }
  }

  /** Viewer: ask for a quality ("auto", "high", "medium", "low", "audio_only"); kept across reconnections. */
  setQuality(quality) {
    if (!QUALITIES.includes(quality)) throw new TypeError(`quality must be one of ${QUALITIES.join(", ")}`);
    if (this.role !== "viewer") throw new TypeError("setQuality is for viewers");
    this._wantedQuality = quality;
    if (this._joined) this._send({ type: "set_quality", quality });
  }

  /** Host: pause the simulcast encodings no viewer needs, resume the others (best effort). */
  async _applyLayers(active) {
    const sender = this._videoSender;
    if (!sender || typeof sender.getParameters !== "function") return;
    try {
      const params = sender.getParameters();
      if (!params.encodings || params.encodings.length < 2) return;
      let changed = false;
      for (const encoding of params.encodings) {
        const on = !encoding.rid || active.includes(encoding.rid);
        if (encoding.active !== on) {
          encoding.active = on;
          changed = true;
        }
      }
      if (changed) await sender.setParameters(params);
    } catch (err) {
      this.log("pausing simulcast layers failed:", err);
    }
  }

  /** Whether an error code comes with a close after which this client does not reconnect. */
  _isFatalCode(code) {
    if (code === "bad_message") return !this._joined; // before a good join it closes with 4400
    // a viewer that cannot receive the room's video codec keeps its audio (quality audio_only)
    if (code === "unsupported_codec" && this.role === "viewer" && this._joined) return false;
    return ["unauthorized", "forbidden", "room_not_found", "replaced", "unsupported_codec", "kicked"].includes(code);
  }

  _onSocketClosed(code, reason) {
    this._clearKeepalive();
    this._closePeerConnection();
    if (this._closed) return;
    if (this._stopped) {
      this._finish({ code, reason: reason || "stopped" }, false);
      return;
    }
    if (FINAL_CLOSE_CODES.includes(code) || NOT_RETRIED_CLOSE_CODES.includes(code)) {
      this._finish({ code, reason: reason || CODE_OF_CLOSE[code] || "closed" }, false);
      return;
    }
    this._scheduleReconnect(code, reason);
  }

  _scheduleReconnect(code, reason) {
    this._attempt += 1;
    if (this._attempt > this.reconnect.maxAttempts) {
      this._error("gave_up", `no connection after ${this.reconnect.maxAttempts} attempts`, true);
      this._finish({ code, reason: "gave_up" }, false);
      return;
    }
    const base = Math.min(
      this.reconnect.maxDelayMs,
      this.reconnect.initialDelayMs * this.reconnect.factor ** (this._attempt - 1),
    );
    const delay = Math.round(base * (0.75 + Math.random() * 0.5)); // jitter: not every client at once
    this.log("signaling closed", code, reason, `reconnecting in ${delay} ms (attempt ${this._attempt})`);
    this._joined = false;
    this._updateState();
    this.dispatchEvent(eventOf("reconnecting", { attempt: this._attempt, delayMs: delay, code }));
    this._reconnectTimer = setTimeout(() => {
      this._reconnectTimer = null;
      if (!this._closed) this._connect();
    }, delay);
  }

  /** Start a new session from scratch (the server takes one offer per session). */
  _restartSession(why) {
    if (this._closed) return;
    this.log("restarting the session:", why);
    const ws = this._ws;
    this._generation++; // ignore whatever the old socket still says
    this._clearKeepalive();
    this._closePeerConnection();
    if (ws && ws.readyState === WebSocket.OPEN) {
      try {
        ws.send(JSON.stringify({ type: "leave" }));
        ws.close(1000, "restart");
      } catch { /* already gone */ }
    }
    this._scheduleReconnect(0, why);
  }

  _finish(closeReason, deliberate) {
    if (this._closed) return;
    this._closed = true;
    this.closeReason = closeReason;
    this._generation++;
    this._clearKeepalive();
    if (this._reconnectTimer) {
      clearTimeout(this._reconnectTimer);
      this._reconnectTimer = null;
    }
    const ws = this._ws;
    this._ws = null;
    if (ws && (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING)) {
      try {
        if (deliberate && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "leave" }));
        ws.close(1000, deliberate ? "leave" : "");
      } catch { /* already gone */ }
    }
    this._closePeerConnection();
    if (globalThis.removeEventListener) globalThis.removeEventListener("online", this._onOnline);
    this.hasHost = false;
    const previous = this.state;
    this.state = "closed";
    this.dispatchEvent(eventOf("state", { state: "closed", previous, reason: closeReason }));
  }

  _clearKeepalive() {
    if (this._keepalive) {
      clearInterval(this._keepalive);
      this._keepalive = null;
    }
  }

  // ---- media --------------------------------------------------------------------------------

  async _startPeerConnection(generation) {
    this._closePeerConnection();
    const pc = new RTCPeerConnection({
      iceServers: [...this.iceServers, ...this._sessionIceServers],
      iceTransportPolicy: this.iceTransportPolicy,
      bundlePolicy: "max-bundle",
    });
    this._pc = pc;
    const current = () => generation === this._generation && !this._closed && this._pc === pc;

    pc.onicecandidate = (event) => {
      if (!current()) return;
      const c = event.candidate;
      const isEnd = !c || !c.candidate;
      if (isEnd) {
        if (this._sentEndOfCandidates) return;
        this._sentEndOfCandidates = true;
      }
      const message = isEnd
        ? { type: "candidate", candidate: "", sdpMid: null, sdpMLineIndex: null } // end of candidates
        : { type: "candidate", candidate: c.candidate, sdpMid: c.sdpMid, sdpMLineIndex: c.sdpMLineIndex };
      if (this._offerSent) this._send(message);
      else this._pendingCandidates.push(message);
    };
    pc.onconnectionstatechange = () => {
      if (!current()) return;
      const state = pc.connectionState;
      this.log("peer connection", state);
      this._clearDisconnectedTimer();
      if (state === "connected") {
        this.timings.connected ??= now();
        this._iceRestartedSinceConnected = false;
      } else if (state === "disconnected") {
        // often back by itself within a second or two; else look for a new path
        this._disconnectedTimer = setTimeout(() => {
          this._disconnectedTimer = null;
          if (current() && pc.connectionState === "disconnected") {
            this.restartIce("disconnected").catch((err) => this._restartSession(`ICE restart failed: ${err}`));
          }
        }, ICE_RESTART_AFTER_DISCONNECTED_MS);
      } else if (state === "failed") {
        // first an ICE restart in this session; if that failed too, a new session
        if (this._iceRestartedSinceConnected) {
          this._restartSession("peer connection failed");
          return;
        }
        this.restartIce("failed").then(
          (sent) => {
            if (!sent && current()) this._restartSession("peer connection failed");
          },
          (err) => {
            if (current()) this._restartSession(`ICE restart failed: ${err}`);
          },
        );
      }
      this._updateState();
    };

    if (this.role === "host") {
      this._videoSender = null;
      for (const track of this.stream.getTracks()) {
        const init = { direction: "sendonly", streams: [this.stream] };
        const encodings = simulcastEncodings(track, this.simulcast);
        if (encodings) init.sendEncodings = encodings;
        const transceiver = pc.addTransceiver(track, init);
        preferCodec(transceiver, track.kind, [track.kind === "video" ? `video/${this.codec}` : "audio/opus"]);
        if (track.kind === "video") this._videoSender = transceiver.sender;
      }
    } else {
      const remote = new MediaStream();
      this.remoteStream = remote;
      for (const kind of ["video", "audio"]) {
        const transceiver = pc.addTransceiver(kind, { direction: "recvonly" });
        preferCodec(transceiver, kind, kind === "video" ? ["video/VP8", "video/H264"] : ["audio/opus"]);
      }
      pc.ontrack = (event) => {
        if (!current()) return;
        remote.addTrack(event.track);
        this.dispatchEvent(eventOf("track", { track: event.track, streams: event.streams }));
        if (event.track.kind === "video") this._watchFirstFrame(event.track);
      };
      if (this.videoElement) this._attach(remote);
    }

    this._sentEndOfCandidates = false;
    const offer = await pc.createOffer();
    if (!current()) return;
    await pc.setLocalDescription(offer);
    if (!current()) return;
    this._send({ type: "offer", sdp: pc.localDescription.sdp });
    this._offerSent = true;
    this.timings.offer ??= now();
    this._armMediaTimer(pc, current);
    for (const message of this._pendingCandidates.splice(0)) this._send(message);
  }

  /** No answer, or ICE/DTLS stuck: start over with a new session rather than wait forever. */
  _armMediaTimer(pc, current) {
    this._clearMediaTimer();
    this._mediaTimer = setTimeout(() => {
      this._mediaTimer = null;
      if (current() && pc.connectionState !== "connected") {
        this._restartSession(`no media connection within ${this.mediaTimeoutMs} ms`);
      }
    }, this.mediaTimeoutMs);
  }

  _clearDisconnectedTimer() {
    if (this._disconnectedTimer) {
      clearTimeout(this._disconnectedTimer);
      this._disconnectedTimer = null;
    }
  }

  _attach(stream) {
    const video = this.videoElement;
    video.srcObject = stream;
    const played = video.play();
    if (played && typeof played.catch === "function") {
      played.catch((err) => {
        // autoplay with sound refused: play muted and let the page offer "unmute"
        if (err && err.name === "NotAllowedError" && !video.muted) {
          video.muted = true;
          this.dispatchEvent(eventOf("autoplay-muted", {}));
          video.play().catch(() => {});
        }
      });
    }
  }

  _watchFirstFrame(track) {
    if (this.timings.firstFrame !== undefined) return;
    const done = () => {
      if (this.timings.firstFrame !== undefined || this._closed) return;
      this.timings.firstFrame = now();
      const ms = this.timings.firstFrame - this.timings.started;
      this.dispatchEvent(eventOf("firstframe", { ms }));
    };
    const video = this.videoElement;
    if (video && typeof video.requestVideoFrameCallback === "function") {
      video.requestVideoFrameCallback(() => done());
      return;
    }
    // fallback: poll the decoder counter
    const pc = this._pc;
    const poll = async () => {
      if (this._closed || this._pc !== pc || this.timings.firstFrame !== undefined) return;
      const report = await pc.getStats(track);
      let decoded = 0;
      report.forEach((s) => {
        if (s.type === "inbound-rtp" && s.kind === "video") decoded = s.framesDecoded || 0;
      });
      if (decoded > 0) done();
      else setTimeout(poll, 50);
    };
    poll();
  }

  _clearMediaTimer() {
    if (this._mediaTimer) {
      clearTimeout(this._mediaTimer);
      this._mediaTimer = null;
    }
  }

  _closePeerConnection() {
    this._clearMediaTimer();
    this._clearDisconnectedTimer();
    const pc = this._pc;
    this._pc = null;
    if (pc) {
      pc.onicecandidate = null;
      pc.onconnectionstatechange = null;
      pc.ontrack = null;
      try {
        pc.close();
      } catch { /* already closed */ }
    }
  }
}

export { MediaSession };
