/* mod_sip browser phone: JsSIP over the WebSocket of the httpd that served
 * this page.  Every state the page reaches is written to an element with an
 * id (reg-state, reg-code, call-state, status, last-response), which is what
 * a person reads and what t/browser/drive.js checks. */
(function () {
    'use strict';

    var $ = function (id) { return document.getElementById(id); };
    var ua = null;
    var session = null;

    /* The page's own host as a SIP domain (IPv6 literals keep their
     * brackets, RFC 3261 §25.1 host). */
    var domain = location.hostname.indexOf(':') >= 0 ? '[' + location.hostname + ']'
                                                      : location.hostname;
    var params = new URLSearchParams(location.search);

    function log(text) {
        var line = new Date().toISOString().substr(11, 12) + ' ' + text + '\n';
        $('log').textContent += line;
        if (window.console) console.log('[phone] ' + text);
    }

    function status(text) {
        $('status').textContent = text;
        log(text);
    }

    function setReg(state, code) {
        $('reg-state').textContent = state;
        $('reg-code').textContent = code ? String(code) : '';
        $('register').disabled = state === 'registering' || state === 'registered' ||
                                 state === 'unregistering';
        $('unregister').disabled = !ua;
    }

    function setCall(state, peer) {
        $('call-state').textContent = state;
        if (peer !== undefined) $('call-peer').textContent = peer;
        var active = state === 'calling' || state === 'ringing' || state === 'incoming' ||
                     state === 'answering' || state === 'confirmed';
        $('call').disabled = active;
        $('hangup').disabled = !active;
        $('answer').disabled = state !== 'incoming';
    }

    /* The text of the response that ended a transaction, shown so that a
     * script's answer (env@ lists its environment) can be read. */
    function showResponse(resp) {
        if (!resp || !resp.data) return;
        $('last-response').textContent = resp.data;
    }

    function defaults() {
        var wsScheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
        $('uri').value = params.get('uri') || 'sip:alice@' + domain;
        $('password').value = params.get('password') || '';
        $('ws-url').value = params.get('ws') || wsScheme + '//' + location.host + '/sip';
        $('target').value = params.get('target') || 'sip:env@' + domain;
        $('autoanswer').checked = params.get('autoanswer') === '1';
        ['env', 'busy', 'redirect', 'bob', 'alice'].forEach(function (u) {
            var o = document.createElement('option');
            o.value = 'sip:' + u + '@' + domain;
            $('targets').appendChild(o);
        });
    }

    function stopUA() {
        if (ua) {
            ua.stop();
            ua = null;
        }
        $('unregister').disabled = true;
    }

    function register() {
        stopUA();
        var uri = $('uri').value.trim();
        var wsUrl = $('ws-url').value.trim();
        var socket;
        try {
            socket = new JsSIP.WebSocketInterface(wsUrl);
        } catch (e) {
            setReg('failed');
            status('Bad WebSocket URL ' + wsUrl + ': ' + e.message);
            return;
        }
        var config = {
            sockets: [socket],
            uri: uri,
            password: $('password').value || null,
            register: true,     /* on every (re)connection of the WebSocket */
            register_expires: 600,
            session_timers: false,
            user_agent: 'mod_sip browser phone (JsSIP ' + JsSIP.version + ')'
        };
        var me;
        try {
            me = new JsSIP.UA(config);
        } catch (e) {
            setReg('failed');
            status('Bad account: ' + e.message);
            return;
        }
        ua = me;
        /* Events of a UA this page has since replaced are ignored. */
        var on = function (ev, f) {
            me.on(ev, function (e) { if (ua === me) f(e); });
        };
        on('connecting', function () { log('WebSocket connecting to ' + wsUrl); });
        on('connected', function () { log('WebSocket connected'); });
        on('disconnected', function (e) {
            log('WebSocket disconnected' + (e && e.error ? ' (error)' : ''));
        });
        on('registered', function (e) {
            setReg('registered', e.response.status_code);
            showResponse(e.response);
            status('Registered ' + uri + ' (' + e.response.status_code + ' ' +
                   e.response.reason_phrase + ')');
        });
        on('unregistered', function (e) {
            setReg('unregistered', e && e.response ? e.response.status_code : '');
            status('Unregistered');
            stopUA();
        });
        on('registrationFailed', function (e) {
            var code = e.response ? e.response.status_code : '';
            setReg('failed', code);
            showResponse(e.response);
            status('Registration failed: ' + e.cause + (code ? ' (' + code + ')' : ''));
        });
        on('newRTCSession', onSession);
        setReg('registering');
        status('Registering ' + uri + ' over ' + wsUrl);
        me.start();
    }

    /* Unregister, then close the WebSocket (at the latest after 5 s). */
    function unregister() {
        var me = ua;
        if (!me) return;
        setReg('unregistering');
        me.unregister();
        setTimeout(function () { if (ua === me) stopUA(); }, 5000);
    }

    function mediaOptions() {
        return {
            mediaConstraints: { audio: true, video: false },
            pcConfig: { iceServers: [] }
        };
    }

    function playRemote(e) {
        e.peerconnection.addEventListener('track', function (ev) {
            if (ev.streams && ev.streams[0]) $('remote-audio').srcObject = ev.streams[0];
        });
    }

    /* One call at a time: a second incoming call is refused busy (486). */
    function onSession(e) {
        var s = e.session;
        if (session && s !== session) {
            if (e.originator === 'remote') s.terminate({ status_code: 486 });
            return;
        }
        session = s;
        var peer = s.remote_identity ? s.remote_identity.uri.toString() : '';
        s.on('progress', function (ev) {
            if (s.direction === 'outgoing') {
                setCall('ringing');
                status('Ringing ' + peer +
                       (ev.response ? ' (' + ev.response.status_code + ')' : ''));
            }
        });
        s.on('accepted', function (ev) {
            if (ev.response) showResponse(ev.response);
            log('call accepted');
        });
        s.on('confirmed', function () {
            setCall('confirmed');
            status('In call with ' + peer);
        });
        s.on('ended', function (ev) {
            setCall('ended');
            status('Call ended by ' + ev.originator + ' (' + ev.cause + ')');
            session = null;
        });
        s.on('failed', function (ev) {
            var code = ev.message && ev.message.status_code ? ev.message.status_code : '';
            if (ev.message && ev.message.data) showResponse(ev.message);
            setCall('failed: ' + ev.cause + (code ? ' ' + code : ''));
            if (code >= 200 && code < 300) {
                status('The call was answered ' + code + ' without a usable session ' +
                       'description, so the phone hung up; the answer is under ' +
                       '"Last final response"');
            } else {
                status('Call failed: ' + ev.cause + (code ? ' (' + code + ')' : ''));
            }
            session = null;
        });
        if (e.originator === 'remote') {
            s.on('peerconnection', playRemote);
            setCall('incoming', peer);
            status('Incoming call from ' + peer);
            if ($('autoanswer').checked) answer();
        } else {
            setCall('calling', peer);
        }
    }

    function call() {
        if (!ua || !ua.isConnected()) {
            status('Register first');
            return;
        }
        var target = $('target').value.trim();
        var opts = mediaOptions();
        opts.eventHandlers = { peerconnection: playRemote };
        status('Calling ' + target);
        try {
            ua.call(target, opts);
        } catch (e) {
            setCall('failed: ' + e.message);
            status('Cannot call ' + target + ': ' + e.message);
        }
    }

    function answer() {
        if (session && session.direction === 'incoming' && session.isInProgress()) {
            setCall('answering');
            session.answer(mediaOptions());
        }
    }

    function hangup() {
        if (session) session.terminate();
    }

    $('register').addEventListener('click', register);
    $('unregister').addEventListener('click', unregister);
    $('call').addEventListener('click', call);
    $('hangup').addEventListener('click', hangup);
    $('answer').addEventListener('click', answer);
    window.addEventListener('beforeunload', stopUA);

    if (typeof JsSIP === 'undefined') {
        status('JsSIP did not load (jssip.min.js): run "npm ci" in the source tree');
        $('register').disabled = true;
        $('call').disabled = true;
        return;
    }
    defaults();
    setReg('unregistered');
    setCall('idle');
    status('Ready (JsSIP ' + JsSIP.version + ')');
    document.body.setAttribute('data-ready', '1');
}());
