#!/usr/bin/env node
/* Drives the browser phone (www/phone/) in Debian's headless Chromium with
 * playwright-core, for t/browser.t.
 *
 *   node t/browser/drive.js --profile DIR [--chromium /usr/bin/chromium]
 *                           [--timeout SECONDS]
 *
 * Reads one JSON command per line on stdin and answers each with one line
 * "DRIVE {json}" on stdout: {"ok":true,...} or {"ok":false,"error":"..."}.
 * Commands (tab names any page opened with "open"):
 *   {"cmd":"open","tab":"a","url":"http://.../phone/"}     page loaded, JsSIP ready
 *   {"cmd":"fill","tab":"a","fields":{"uri":..,"password":..,"ws-url":..,"target":..},
 *    "autoanswer":true}
 *   {"cmd":"click","tab":"a","id":"register"}
 *   {"cmd":"wait","tab":"a","id":"reg-state","match":"^registered$","timeout":10}
 *   {"cmd":"read","tab":"a"}                               the page's state elements
 *   {"cmd":"screenshot","tab":"a","path":"x.png"}
 *   {"cmd":"close","tab":"a"}
 *   {"cmd":"quit"}
 * The browser profile lives in --profile (a fresh directory of the test's), so
 * the test can find and end the Chromium processes of this run alone if this
 * script dies.  After --timeout seconds (default 120) everything is closed
 * and the script exits 2; on stdin's end it closes the browser and exits 0. */
'use strict';

const readline = require('readline');
let chromium;
try {
    ({ chromium } = require('playwright-core'));
} catch (e) {
    process.stdout.write('DRIVE ' + JSON.stringify({
        ok: false, fatal: true,
        error: 'playwright-core not found (run "npm ci" in the source tree): ' + e.message
    }) + '\n');
    process.exit(3);
}

function argOf(name, dflt) {
    const i = process.argv.indexOf('--' + name);
    return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}

const profile = argOf('profile');
const executable = argOf('chromium', '/usr/bin/chromium');
const totalTimeout = Number(argOf('timeout', '120'));

function reply(obj) {
    process.stdout.write('DRIVE ' + JSON.stringify(obj) + '\n');
}

if (!profile) {
    reply({ ok: false, fatal: true, error: '--profile DIR is required' });
    process.exit(3);
}

/* The flags this closed network needs (no background connections to
 * Google's hosts) and fake media devices that need no permission prompt. */
const ARGS = [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
    '--ignore-certificate-errors', '--autoplay-policy=no-user-gesture-required'
];

/* Every RTCPeerConnection of the pages gathers relay candidates only, and
 * with no TURN server that is none: WebRTC would otherwise offer and check
 * the machine's non-loopback addresses, which this closed network must not
 * see (Chromium's --force-webrtc-ip-handling-policy does not stop host
 * candidates once the fake devices are granted).  The tests are about SIP
 * signalling: ICE never completes, and calls are confirmed by 200/ACK all
 * the same. */
function noHostCandidates() {
    const P = window.RTCPeerConnection;
    if (!P) return;
    const relay = (cfg) => Object.assign({}, cfg || {}, { iceTransportPolicy: 'relay' });
    class RelayOnly extends P {
        constructor(cfg, ...rest) { super(relay(cfg), ...rest); }
        setConfiguration(cfg) { return super.setConfiguration(relay(cfg)); }
    }
    window.RTCPeerConnection = RelayOnly;
}

let context = null;
const tabs = new Map();   // name -> { page, console: [lines] }
let closing = false;

async function shutdown(code) {
    if (closing) return;
    closing = true;
    const hard = setTimeout(() => process.exit(code), 10000);
    try {
        if (context) await context.close();
    } catch (e) {
        process.stderr.write('drive.js: closing the browser: ' + e.message + '\n');
    }
    clearTimeout(hard);
    process.exit(code);
}

const watchdog = setTimeout(() => {
    reply({ ok: false, fatal: true, error: 'drive.js: no quit after ' + totalTimeout + ' s' });
    shutdown(2);
}, totalTimeout * 1000);

function tabOf(c) {
    const t = tabs.get(c.tab);
    if (!t) throw new Error('no tab "' + c.tab + '" (open it first)');
    return t;
}

/* What the page shows, for answers and for failure messages. */
async function readState(t) {
    return t.page.evaluate(() => {
        const ids = ['reg-state', 'reg-code', 'call-state', 'call-peer', 'status',
                     'last-response', 'log'];
        const o = {};
        for (const id of ids) {
            const el = document.getElementById(id);
            o[id] = el ? el.textContent : null;
        }
        for (const id of ['uri', 'ws-url', 'target']) {
            const el = document.getElementById(id);
            o[id] = el ? el.value : null;
        }
        o.jssip = typeof JsSIP !== 'undefined' ? JsSIP.version : null;
        return o;
    });
}

const commands = {
    async open(c) {
        if (!context) {
            context = await chromium.launchPersistentContext(profile, {
                executablePath: executable, headless: true, args: ARGS,
                ignoreHTTPSErrors: true, timeout: 30000
            });
            await context.addInitScript(noHostCandidates);
        }
        const page = await context.newPage();
        const t = { page, console: [] };
        page.on('console', (m) => t.console.push(m.type() + ': ' + m.text()));
        page.on('pageerror', (e) => t.console.push('pageerror: ' + e.message));
        tabs.set(c.tab, t);
        const resp = await page.goto(c.url, { timeout: 15000 });
        if (!resp || !resp.ok()) {
            throw new Error('GET ' + c.url + ': ' + (resp ? resp.status() : 'no response'));
        }
        await page.waitForSelector('body[data-ready="1"]', { timeout: 10000 })
            .catch(async () => {
                const s = await readState(t);
                throw new Error('page not ready: ' + s.status + '; console: ' +
                                t.console.slice(-10).join(' | '));
            });
        const s = await readState(t);
        return { jssip: s.jssip, status: s.status, title: await page.title() };
    },

    async fill(c) {
        const t = tabOf(c);
        for (const [id, v] of Object.entries(c.fields || {})) {
            await t.page.fill('#' + id, String(v));
        }
        if (c.autoanswer !== undefined) await t.page.setChecked('#autoanswer', !!c.autoanswer);
        return {};
    },

    async click(c) {
        const t = tabOf(c);
        await t.page.click('#' + c.id, { timeout: 5000 });
        return {};
    },

    async wait(c) {
        const t = tabOf(c);
        const re = new RegExp(c.match);
        const end = Date.now() + (c.timeout || 10) * 1000;
        let text = null;
        for (;;) {
            text = await t.page.textContent('#' + c.id);
            if (re.test(text || '')) return { text };
            if (Date.now() > end) break;
            await new Promise((r) => setTimeout(r, 100));
        }
        const s = await readState(t);
        const err = new Error('#' + c.id + ' is "' + text + '", not /' + c.match + '/ after ' +
                              (c.timeout || 10) + ' s');
        err.state = s;
        err.console = t.console.slice(-30);
        throw err;
    },

    async read(c) {
        const t = tabOf(c);
        return { state: await readState(t), console: t.console.slice(-30) };
    },

    async screenshot(c) {
        await tabOf(c).page.screenshot({ path: c.path, fullPage: true });
        return {};
    },

    async close(c) {
        const t = tabOf(c);
        await t.page.close();
        tabs.delete(c.tab);
        return {};
    },

    async quit() {
        reply({ ok: true });
        clearTimeout(watchdog);
        await shutdown(0);
        return null;
    }
};

/* Commands run one at a time, in order. */
let queue = Promise.resolve();
const rl = readline.createInterface({ input: process.stdin });
rl.on('line', (line) => {
    if (!line.trim()) return;
    queue = queue.then(async () => {
        let c;
        try {
            c = JSON.parse(line);
        } catch (e) {
            reply({ ok: false, error: 'bad command line: ' + e.message });
            return;
        }
        const f = commands[c.cmd];
        if (!f) {
            reply({ ok: false, error: 'unknown command ' + c.cmd });
            return;
        }
        try {
            const r = await f(c);
            if (r !== null) reply(Object.assign({ ok: true }, r));
        } catch (e) {
            reply({ ok: false, error: c.cmd + ': ' + e.message, state: e.state,
                    console: e.console });
        }
    });
});
rl.on('close', () => { queue.then(() => shutdown(0)); });
for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP']) process.on(sig, () => shutdown(1));
