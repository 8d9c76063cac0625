// voicenav softphone: microphone -> RTCPeerConnection -> POST /webrtc/offer (non-trickle, with a
// single-use token from GET /webrtc/token in X-Offer-Token), the IVR's audio in <audio>, keypad
// digits and hang-up over a data channel, live transcript from its events.
//
// Automated runs: ?autotest=1 starts the call on load and records what it hears (MediaRecorder).
//   hangup_after_ms=N  hang up after N ms of call (default 30000), unless the IVR hangs up first
//   dtmf=12#           press these keypad buttons once connected (dtmf_at_ms, default 1000, 300 ms apart)
//   codec=PCMU         offer only this audio codec
//   upload=/path       POST {report (JSON), audio (webm)} there when the call is over (same origin only)
// then document.title becomes DONE (or ERROR).
'use strict';

(() => {
  const OFFER_URL = '/webrtc/offer';
  const TOKEN_URL = '/webrtc/token';
  const GATHER_TIMEOUT_MS = 3000;
  const params = new URLSearchParams(location.search);
  const autotest = params.get('autotest') === '1';

  const $ = (id) => document.getElementById(id);
  const statusEl = $('status');
  const callBtn = $('call');
  const hangupBtn = $('hangup');
  const keypadBtns = Array.from(document.querySelectorAll('#keypad button'));
  const transcriptEl = $('transcript');
  const remoteAudio = $('remote');

  let call = null;  // {pc, stream, channel, callId, ended, recorder, chunks, events, endedBy, reason, stats}

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function setStatus(text, state) {
    statusEl.textContent = text;
    statusEl.dataset.state = state;
  }

  function setInCall(inCall) {
    callBtn.disabled = inCall;
    hangupBtn.disabled = !inCall;
    keypadBtns.forEach((b) => { b.disabled = !inCall; });
  }

  function addLine(kind, who, text) {
    const li = document.createElement('li');
    li.className = kind;
    const whoEl = document.createElement('span');
    whoEl.className = 'who';
    whoEl.textContent = who;
    li.append(whoEl, document.createTextNode(text));
    transcriptEl.append(li);
    li.scrollIntoView({block: 'nearest'});
  }

  function onEvent(msg) {
    if (call) call.events.push(msg);
    switch (msg.type) {
      case 'transcript': addLine('caller', 'You said', String(msg.text ?? '')); break;
      case 'prompt': addLine('ivr', 'IVR', String(msg.text ?? '')); break;
      case 'route': addLine('route', 'Routing', 'Transferring you to ' + String(msg.queue ?? '')); break;
      case 'status': setStatus(String(msg.text ?? ''), 'connected'); break;
      case 'hangup': endCall('remote', String(msg.reason ?? 'bye')); break;
      default: console.log('unhandled event', msg);
    }
  }

  async function waitForGathering(pc) {
    if (pc.iceGatheringState === 'complete') return;
    await Promise.race([
      new Promise((resolve) => pc.addEventListener('icegatheringstatechange', () => {
        if (pc.iceGatheringState === 'complete') resolve();
      })),
      sleep(GATHER_TIMEOUT_MS),
    ]);
  }

  // Every offer spends a fresh single-use token from the server (its proof that this page asked).
  async function offerToken() {
    const resp = await fetch(TOKEN_URL, {cache: 'no-store'});
    if (!resp.ok) {
      const retry = resp.headers.get('Retry-After');
      throw new Error(resp.status === 429 ? `Too many calls, try again in ${retry || 'a few'} s`
        : `Call refused (token ${resp.status})`);
    }
    return (await resp.json()).token;
  }

  async function startCall() {
    if (call && !call.ended) return;
    transcriptEl.replaceChildren();
    setInCall(true);
    setStatus('Starting microphone…', 'connecting');
    // Test runs compare waveforms, so they turn the voice processing off.
    const processing = !autotest;
    const stream = await navigator.mediaDevices.getUserMedia({audio: {
      echoCancellation: processing, noiseSuppression: processing, autoGainControl: processing}, video: false});
    const pc = new RTCPeerConnection({iceServers: []});
    call = {pc, stream, channel: null, callId: null, ended: false, recorder: null, chunks: [], events: [],
            endedBy: null, reason: null, stats: null};
    const current = call;
    stream.getTracks().forEach((t) => pc.addTrack(t, stream));
    const codec = params.get('codec');
    if (codec) {
      const want = 'audio/' + codec.toLowerCase();
      const caps = RTCRtpSender.getCapabilities('audio').codecs.filter((c) => c.mimeType.toLowerCase() === want);
      pc.getTransceivers()[0].setCodecPreferences(caps);
    }
    const channel = pc.createDataChannel('control');
    current.channel = channel;
    channel.addEventListener('message', (ev) => {
      try { onEvent(JSON.parse(ev.data)); } catch (err) { console.log('bad event', ev.data, err); }
    });
    channel.addEventListener('close', () => endCall('remote', 'closed'));
    pc.addEventListener('track', (ev) => {
      const remote = ev.streams[0] || new MediaStream([ev.track]);
      remoteAudio.srcObject = remote;
      if (autotest) {
        current.recorder = new MediaRecorder(remote, {mimeType: 'audio/webm;codecs=opus'});
        current.recorder.addEventListener('dataavailable', (e) => { if (e.data.size) current.chunks.push(e.data); });
        current.recorder.start(500);
      }
    });
    pc.addEventListener('connectionstatechange', () => {
      if (pc.connectionState === 'connected') {
        setStatus('Connected', 'connected');
        if (autotest) autotestConnected();
      } else if (pc.connectionState === 'failed') {
        endCall('network', 'connection failed');
      }
    });

    setStatus('Calling…', 'connecting');
    await pc.setLocalDescription(await pc.createOffer());
    await waitForGathering(pc);  // non-trickle: the offer carries every candidate
    const resp = await fetch(OFFER_URL, {method: 'POST',
      headers: {'Content-Type': 'application/json', 'X-Offer-Token': await offerToken()},
      body: JSON.stringify({sdp: pc.localDescription.sdp, type: 'offer'})});
    if (!resp.ok) {
      const retry = resp.headers.get('Retry-After');
      const body = await resp.json().catch(() => ({}));
      const why = resp.status === 503 ? 'All lines are busy' + (retry ? `, try again in ${retry} s` : '')
        : `Call refused (${body.error || resp.status})`;
      throw new Error(why);
    }
    const answer = await resp.json();
    current.callId = answer.call_id;
    await pc.setRemoteDescription({type: answer.type, sdp: answer.sdp});
    setStatus('Connecting…', 'connecting');
  }

  function sendDigit(digit) {
    if (!call || call.ended || !call.channel || call.channel.readyState !== 'open') return;
    call.channel.send(JSON.stringify({type: 'dtmf', digit}));
    addLine('dtmf', 'Keypad', digit);
  }

  async function hangUp() {
    if (!call || call.ended) return;
    const ch = call.channel;
    if (ch && ch.readyState === 'open') ch.send(JSON.stringify({type: 'hangup'}));
    await endCall('local', 'hung up');
  }

  async function collectStats(pc) {
    const stats = {codecs: []};
    (await pc.getStats()).forEach((s) => {
      if (s.type === 'outbound-rtp' && s.kind === 'audio') stats.outbound = {packets: s.packetsSent, bytes: s.bytesSent};
      if (s.type === 'inbound-rtp' && s.kind === 'audio') {
        stats.inbound = {packets: s.packetsReceived, lost: s.packetsLost, jitter: s.jitter,
          concealedSamples: s.concealedSamples, removedSamplesForAcceleration: s.removedSamplesForAcceleration,
          insertedSamplesForDeceleration: s.insertedSamplesForDeceleration};
      }
      if (s.type === 'codec') stats.codecs.push(s.mimeType);
    });
    return stats;
  }

  function endedText(by, reason) {
    if (by === 'local') return 'Call ended';
    if (by === 'network') return 'Call lost: the connection failed';
    switch (reason) {
      case 'bye': return 'The call was ended by the service';
      case 'server-shutdown': return 'The service is restarting; please call again';
      case 'error': return 'Call ended by a technical problem';
      default: return `Call ended (${reason})`;
    }
  }

  async function endCall(by, reason) {
    if (!call || call.ended) return;
    const c = call;
    c.ended = true;
    c.endedBy = by;
    c.reason = reason;
    setInCall(false);
    setStatus(endedText(by, reason), by === 'network' || reason === 'error' ? 'error' : 'idle');
    if (autotest) c.stats = await collectStats(c.pc).catch((err) => ({error: String(err)}));
    const ch = c.channel;
    if (by === 'local' && ch && ch.readyState === 'open') {
      // let the hang-up message leave before the connection goes (bounded)
      for (let i = 0; i < 20 && ch.bufferedAmount > 0; i++) await sleep(10);
    }
    c.pc.close();
    c.stream.getTracks().forEach((t) => t.stop());
    remoteAudio.srcObject = null;
    if (autotest) finishAutotest(c).catch(autotestFailed);
  }

  // ---------------------------------------------------------------- automated runs
  let autotestDigitsSent = false;

  function autotestConnected() {
    const digits = params.get('dtmf') || '';
    if (autotestDigitsSent || !digits) return;
    autotestDigitsSent = true;
    const start = Number(params.get('dtmf_at_ms') || 1000);
    Array.from(digits).forEach((d, i) => setTimeout(() => {
      const btn = keypadBtns.find((b) => b.dataset.digit === d);
      if (btn) btn.click();
    }, start + 300 * i));
  }

  async function finishAutotest(c) {
    if (c.recorder && c.recorder.state !== 'inactive') {
      const stopped = new Promise((resolve) => c.recorder.addEventListener('stop', resolve));
      c.recorder.stop();
      await stopped;
    }
    const upload = params.get('upload');
    if (upload) {
      if (!/^\/[A-Za-z0-9_\-/]*$/.test(upload)) throw new Error('upload must be a same-origin path');
      const report = {callId: c.callId, endedBy: c.endedBy, reason: c.reason, events: c.events,
        status: statusEl.textContent,
        lines: Array.from(transcriptEl.children).map((li) => ({kind: li.className, text: li.lastChild.textContent})),
        stats: c.stats};
      const fd = new FormData();
      fd.append('report', JSON.stringify(report));
      if (c.chunks.length) fd.append('audio', new Blob(c.chunks, {type: 'audio/webm'}), 'heard.webm');
      const resp = await fetch(upload, {method: 'POST', body: fd});
      if (!resp.ok) throw new Error('upload failed: ' + resp.status);
    }
    document.title = 'DONE';
  }

  function autotestFailed(err) {
    console.log('autotest error: ' + err);
    document.title = 'ERROR';
  }

  // ---------------------------------------------------------------- wiring
  function callFailed(err) {
    console.log('call failed: ' + err);
    if (call && !call.ended) {
      call.ended = true;
      call.pc.close();
      call.stream.getTracks().forEach((t) => t.stop());
    }
    setStatus(String(err.message || err), 'error');
    setInCall(false);
    if (autotest) autotestFailed(err);
  }

  callBtn.addEventListener('click', () => startCall().catch(callFailed));
  hangupBtn.addEventListener('click', () => { hangUp(); });
  keypadBtns.forEach((b) => b.addEventListener('click', () => sendDigit(b.dataset.digit)));
  document.addEventListener('keydown', (ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey || !/^[0-9*#]$/.test(ev.key)) return;
    if (call && !call.ended) { sendDigit(ev.key); ev.preventDefault(); }
  });

  if (autotest) {
    setTimeout(() => hangUp(), Number(params.get('hangup_after_ms') || 30000));
    callBtn.click();
  }
})();
