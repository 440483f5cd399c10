#!/usr/bin/perl
# The browser phone of make run (www/phone/, JsSIP) in a real browser:
# Debian's headless Chromium with fake media devices, driven through
# t/browser/drive.js (playwright-core), against httpd + mod_sip configured
# with the web part of conf/run.conf.in itself (the page, the jssip.min.js
# alias, <Location "/sip"> SipWebSocket On on the HTTP port and on an HTTPS
# port with a self-signed certificate made here) and make run's env@ and
# default.cgi from sip-cgi-bin/, on ports of the test's.
#
# Over ws:// and then over wss:// (page loaded over https), each with its
# own sipp UAS registered (UDP) as the callee:
#   the page loads, JsSIP runs, its defaults are the page's own origin
#   (WebSocket URL .../sip, target sip:env@127.0.0.1);
#   Register: the page shows registered 200 and the registrar holds the
#   browser's binding (;transport=ws); over wss:// the HTTPS vhost asks for
#   digest authentication (SipAuth On in its <Location "/">), so a wrong
#   password in the page first shows the registration refused (401/403)
#   with nothing registered, then the right one registers and calls;
#   Call the sipp UAS through mod_sip: sipp answers with a canned WebRTC
#   answer, the page shows the call confirmed; Hang up: the page shows it
#   ended, sipp got INVITE, ACK and BYE through the proxy (its Via and
#   Record-Route, the browser's WS(S) Via below), answered the BYE and
#   exited with one successful call;
#   the default target env@ answers 200 with its environment and no session
#   description: the page ends the call and shows that answer (the request
#   came over WS);
#   Unregister: the binding is gone.
# Then browser to browser (the flows of RFC 5626: a request for a user
# registered over a WebSocket goes on that connection): carol's page over
# ws:// calls dave's over wss://; dave answers by hand, carol hangs up; then
# dave answers by himself (auto-answer) and hangs up; each side shows the
# other's BYE.
# Any missing piece (chromium, node, npm packages, sipp) is a failure.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use File::Copy ();
use File::Path ();
use SipTest qw(free_port wait_until);
use SipRegTest;
use SipBrowser;
use SipDigest;

my $avail = SipRegTest::sipp_present();
$avail = SipBrowser::available() && $avail;
$avail or do { done_testing; exit 1 };

my $REPO = SipTest::repo();
my $https_port = free_port();
my $REALM = 'browser.test';
my %PASSWORD = (bob => 'bob-secret', dave => 'dave-secret');

# The web part of conf/run.conf.in (from its mod_status section on), with
# the test's ports and directories; SipTest listens on the HTTP port itself.
sub web_conf {
    open(my $fh, '<', "$REPO/conf/run.conf.in") or die "conf/run.conf.in: $!";
    local $/;
    my $c = <$fh>;
    $c =~ s/\A.*?(?=^# Watching SIP)//ms or die "conf/run.conf.in: no '# Watching SIP' section\n";
    $c =~ s/^Listen 127\.0\.0\.1:8060\n//m or die "conf/run.conf.in: no Listen 127.0.0.1:8060\n";
    $c =~ s/127\.0\.0\.1:8060/127.0.0.1:\@HTTPPORT\@/g;
    $c =~ s/127\.0\.0\.1:8443/127.0.0.1:$https_port/g;
    $c =~ s/\@ROOT\@/\@DIR\@/g;
    $c =~ s/\@WWW\@/\@DIR\@\/www/g;
    $c =~ s/\@JSSIP\@/\@DIR\@\/jssip/g;
    $c =~ s/\@MODDIR\@/$SipTest::MODDIR/g;
    # digest authentication for the HTTPS vhost's SIP (the page's password)
    my $auth = join '', map { "    $_\n" } '<Location "/">', '    SipAuth On', "    AuthName \"$REALM\"",
                                         '    AuthUserFile @DIR@/users.htdigest', '</Location>';
    $c =~ s/^(    SSLEngine on\n)/$1$auth/m
        or die "conf/run.conf.in: no SSLEngine on\n";
    return "LoadModule authn_core_module $SipTest::MODDIR/mod_authn_core.so\n"
         . "LoadModule authn_file_module $SipTest::MODDIR/mod_authn_file.so\n" . $c;
}

# The page and JsSIP copied where www-data can read them, and a
# certificate made the way make run makes it.
sub setup {
    my ($t) = @_;
    my $d = $t->dir;
    File::Path::make_path("$d/www/phone", "$d/jssip", "$d/tls", { mode => 0755 });
    for my $f (glob "$REPO/www/phone/*") {
        File::Copy::copy($f, "$d/www/phone/") or die "copy $f: $!";
    }
    File::Copy::copy(SipBrowser::jssip_js(), "$d/jssip/jssip.min.js") or die "copy jssip: $!";
    SipDigest::write_htdigest("$d/users.htdigest", $REALM, %PASSWORD);
    chmod 0644, glob("$d/www/phone/* $d/jssip/*");
    my @req = ('openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2',
               '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
               '-addext', 'basicConstraints=critical,CA:FALSE',
               '-keyout', "$d/tls/server.key", '-out', "$d/tls/server.crt");
    system(join(' ', map { "'$_'" } @req) . " 2>$d/openssl.out") == 0
        or die "openssl req failed: " . `cat $d/openssl.out`;
}

# make run's scripts: env@ and default.cgi (which leaves REGISTERs and
# calls for registered users to the server)
my %scripts;
for my $name ('env@127.0.0.1', 'default.cgi') {
    open(my $fh, '<', "$REPO/sip-cgi-bin/$name") or die "sip-cgi-bin/$name: $!";
    $scripts{$name} = do { local $/; <$fh> };
}

my $t = SipRegTest->new(server_conf => web_conf(), setup => \&setup, scripts => \%scripts);
my $http = $t->http_port;
like($t->http_get('/phone/'), qr{^HTTP/1\.1 200 .*<script src="jssip\.min\.js">}s,
     'httpd serves the page on the HTTP port');
like($t->http_get('/phone/jssip.min.js'), qr{^HTTP/1\.1 200 .*JsSIP}s, 'and JsSIP through the alias');

my $b = SipBrowser->new(dir => $t->dir);

# The page's controls, each step one test; the driver's answer.
sub page_open  { my ($tab, $url, $name) = @_; $b->ok_cmd({ cmd => 'open', tab => $tab, url => $url }, $name) }
sub page_click { my ($tab, $id, $name) = @_; $b->ok_cmd({ cmd => 'click', tab => $tab, id => $id }, $name) }
sub page_fill {
    my ($tab, $fields, $name, %o) = @_;
    return $b->ok_cmd({ cmd => 'fill', tab => $tab, fields => $fields, %o }, $name);
}
# Until element $id's text matches $re (within $to s, default 15); true then.
sub page_wait {
    my ($tab, $id, $re, $name, $to) = @_;
    return $b->ok_cmd({ cmd => 'wait', tab => $tab, id => $id, match => $re, timeout => $to // 15 },
                      $name)->{ok};
}
sub page_state { my ($tab) = @_; my $r = $b->cmd({ cmd => 'read', tab => $tab }); return $r->{state} || {} }

# One phone in tab $tab over $scheme: load, register as $user, call a sipp
# UAS registered as $callee, hang up, call env@, unregister.
sub phone_run {
    my (%o) = @_;
    my ($tab, $scheme, $user, $callee) = @o{qw(tab scheme user callee)};
    my $port = $scheme eq 'wss' ? $https_port : $http;
    my $origin = ($scheme eq 'wss' ? 'https' : 'http') . "://127.0.0.1:$port";
    my $L = uc $scheme;
    my $sp = $t->sip_port;

    # the called phone, registered over UDP
    my $uport = free_port();
    my $uas = $t->rsipp_start(name => "uas-$tab", sf => 'browser-uas.xml', port => $uport,
                              m => 1, timeout => '60s');
    my $reg = $t->register(user => $callee, contacts => [ "<sip:$callee\@127.0.0.1:$uport>" ]);
    is($reg && $reg->code, 200, "$L: sipp UAS registered as $callee");

    my $r = page_open($tab, "$origin/phone/", "$L: page loads in Chromium");
    return unless $r->{ok};
    like($r->{jssip} // '', qr/^\d+\.\d+/, "$L: JsSIP loaded (" . ($r->{jssip} // 'none') . ')');
    my $st = page_state($tab);
    is($st->{'ws-url'}, "$scheme://127.0.0.1:$port/sip",
       "$L: WebSocket URL defaults to the page's origin + /sip");
    is($st->{target}, 'sip:env@127.0.0.1', "$L: target defaults to sip:env\@<the page's host>");
    is($st->{uri}, 'sip:alice@127.0.0.1', "$L: SIP URI defaults to sip:alice\@<the page's host>");

    # register (with digest: a wrong password first)
    my $aor = "sip:$user\@127.0.0.1";
    my $pw = $PASSWORD{$user};
    if (defined $pw) {
        page_fill($tab, { uri => $aor, password => 'wrong' }, "$L: fill in the SIP URI and a wrong password");
        page_click($tab, 'register', "$L: click Register");
        page_wait($tab, 'reg-state', '^failed$',
                  "$L: with a wrong password the page shows the registration failed");
        like(page_state($tab)->{'reg-code'}, qr/^40[13]$/, "$L: refused 401 or 403");
        my ($f0, %b0) = $t->fetch($user);
        ok($f0 && $f0->code == 200 && !%b0, "$L: and nothing registered")
            or diag(SipRegTest::dump_contacts($f0));
    }
    page_fill($tab, { uri => $aor, password => $pw // '' },
              "$L: fill in the SIP URI" . (defined $pw ? ' and the right password' : ''));
    page_click($tab, 'register', "$L: click Register");
    page_wait($tab, 'reg-state', '^registered$', "$L: the page shows registered") or return;
    is(page_state($tab)->{'reg-code'}, '200', "$L: the REGISTER was answered 200");
    my ($f, %binds) = $t->fetch($user);
    # (JsSIP's Contact says transport=ws over wss too; its Via says WSS)
    my @ws = grep { /\.invalid;transport=ws$/i } keys %binds;
    ok($f && $f->code == 200 && @ws == 1, "$L: the registrar holds the browser's binding (;transport=ws)")
        or diag(SipRegTest::dump_contacts($f));

    # call the sipp UAS and hang up
    page_fill($tab, { target => "sip:$callee\@127.0.0.1" }, "$L: fill in the target");
    page_click($tab, 'call', "$L: click Call");
    page_wait($tab, 'call-state', '^confirmed$', "$L: the page shows the call confirmed", 20) or return;
    sleep 1;
    page_click($tab, 'hangup', "$L: click Hang up");
    page_wait($tab, 'call-state', '^ended$', "$L: the page shows the call ended", 10);
    $t->rsipp_ok($uas, label => "$L: sipp UAS", timeout => 30);
    my ($inv) = SipRegTest::rsipp_msgs($uas, dir => 'received', method => 'INVITE');
    my @via = $inv ? $inv->header_elems('via') : ();
    ok(@via == 2 && $via[0] =~ m{^SIP/2\.0/UDP 127\.0\.0\.1:$sp;} && $via[1] =~ m{^SIP/2\.0/$L }i,
       "$L: the INVITE came through mod_sip (its UDP Via over the browser's $L Via)")
        or diag(join("\n", @via) || 'no INVITE');
    my $sdp = $inv ? $inv->body : '';
    like($sdp, qr{^m=audio \d+ UDP/TLS/RTP/SAVPF}m, "$L: with the browser's WebRTC offer");
    ok($inv && $sdp !~ /^a=candidate/m,
       "$L: naming no ICE candidate (drive.js keeps WebRTC off the machine's addresses)");
    ok($inv && $inv->header('record-route'), "$L: and a Record-Route");
    for my $m (qw(ACK BYE)) {
        my ($got) = SipRegTest::rsipp_msgs($uas, dir => 'received', method => $m);
        ok($got && ($got->header_elems('via'))[0] =~ m{^SIP/2\.0/UDP 127\.0\.0\.1:$sp;},
           "$L: sipp got the browser's $m through mod_sip") or diag($got ? $got->head : "no $m");
    }

    # the default target: env@ answers 200 with its environment, no SDP
    page_fill($tab, { target => 'sip:env@127.0.0.1' }, "$L: target env\@");
    page_click($tab, 'call', "$L: call env\@");
    page_wait($tab, 'call-state', '^failed: .* 200$',
              "$L: env\@ answers 200 without a session description: the page ends the call", 20);
    my $resp = page_state($tab)->{'last-response'} // '';
    like($resp, qr/^REQUEST_METHOD=INVITE$/m, "$L: the page shows env\@'s answer");
    like($resp, qr{^SIP_VIA=SIP/2\.0/$L }mi, "$L: which saw the INVITE's $L Via");

    # unregister
    page_click($tab, 'unregister', "$L: click Unregister");
    page_wait($tab, 'reg-state', '^unregistered$', "$L: the page shows unregistered", 10);
    ($f, %binds) = $t->fetch($user);
    ok($f && $f->code == 200 && !%binds, "$L: the binding is gone") or diag(SipRegTest::dump_contacts($f));
    $b->cmd({ cmd => 'screenshot', tab => $tab, path => $t->dir . "/phone-$tab.png" });
}

# Browser to browser (a call TO a page reaches it on its WebSocket: the
# binding is a flow): carol in tab c over ws:// calls dave in tab d over
# wss:// (with his password), who answers with the Answer button; carol
# hangs up.  Then dave,
# answering at once (auto-answer), is called again and hangs up himself.
sub two_tabs {
    my %tab = (c => [ 'carol', "http://127.0.0.1:$http" ],
               d => [ 'dave', "https://127.0.0.1:$https_port" ]);
    for my $k (sort keys %tab) {
        my ($user, $origin) = @{ $tab{$k} };
        page_open($k, "$origin/phone/", "tabs: $user\'s page loads")->{ok} or return;
        page_fill($k, { uri => "sip:$user\@127.0.0.1", password => $PASSWORD{$user} // '' },
                  "tabs: $user\'s URI" . ($PASSWORD{$user} ? ' and password' : ''));
        page_click($k, 'register', "tabs: $user registers");
        page_wait($k, 'reg-state', '^registered$', "tabs: $user registered") or return;
    }

    # carol calls dave, who answers by hand; carol hangs up
    page_fill('c', { target => 'sip:dave@127.0.0.1' }, 'tabs: carol dials dave');
    page_click('c', 'call', 'tabs: carol clicks Call');
    page_wait('d', 'call-state', '^incoming$', "tabs: dave's page rings (the INVITE reached it on its WebSocket)")
        or return;
    page_wait('d', 'call-peer', 'carol@127\.0\.0\.1', "tabs: dave's page shows carol calling");
    page_wait('c', 'call-state', '^ringing$', "tabs: carol's page hears it ring (180)");
    page_click('d', 'answer', 'tabs: dave clicks Answer');
    page_wait('d', 'call-state', '^confirmed$', "tabs: dave's call confirmed") or return;
    page_wait('c', 'call-state', '^confirmed$', "tabs: carol's call confirmed") or return;
    page_click('c', 'hangup', 'tabs: carol hangs up');
    page_wait('c', 'call-state', '^ended$', "tabs: carol's call ended");
    page_wait('d', 'status', 'ended by remote', "tabs: dave's call ended by carol (the BYE reached him)");

    # again, dave answering at once, and hanging up himself
    page_fill('d', {}, 'tabs: dave ticks auto-answer', autoanswer => 1);
    page_click('c', 'call', 'tabs: carol calls dave again');
    page_wait('d', 'call-state', '^confirmed$', "tabs: dave's page answered by itself") or return;
    page_wait('c', 'call-state', '^confirmed$', "tabs: carol's call confirmed") or return;
    page_click('d', 'hangup', 'tabs: dave hangs up');
    page_wait('d', 'call-state', '^ended$', "tabs: dave's call ended");
    page_wait('c', 'status', 'ended by remote', "tabs: carol's call ended by dave (the BYE reached her)");
}

# (a run cut short by a failure leaves its sipp: killed before the next)
phone_run(tab => 'a', scheme => 'ws', user => 'alice', callee => 'uas1');
$t->sipp_kill_all;
phone_run(tab => 'b', scheme => 'wss', user => 'bob', callee => 'uas2');
$t->sipp_kill_all;
two_tabs();

ok($b->quit, 'the driver closed Chromium and exited 0');
my @left = $b->browser_pids;
ok(!@left, 'no Chromium process of this test left') or diag("pids: @left");
unless (Test::More->builder->is_passing) {
    diag($t->_log_tail);
    diag('screenshots kept in ' . $t->dir) if $ENV{SIPTEST_KEEP};
}
$t->stop;
done_testing;
