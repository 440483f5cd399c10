#!/usr/bin/perl
# Browser phones registered over WebSocket are flows (RFC 7118 §5, RFC
# 5626 §5.3; issue 16 items 3 and 4), with the t/lib WebSocket client:
#   - a UDP caller reaches the browser on its connection (its Contact host is
#     a made-up .invalid name); Via SIP/2.0/WS; Record-Route with
#     ;transport=ws and the flow facing the browser; ACK, BYE and the 200s
#     of the dialog travel the route set both ways;
#   - the browser calls a UDP phone: that phone's BYE comes back to the
#     browser on its connection;
#   - browser to browser: two flows, two Record-Route entries, the BYE of
#     the callee reaches the caller's connection;
#   - the connection closes: 480 at once (timed), SipFlowsDead counts it;
#     a request of a dialog routed to it gets 430 Flow Failed;
#   - a Contact without ;transport=ws is accepted (logged at debug).
use strict;
use warnings;
use Test::More;
use IO::Socket::INET;
use IO::Select;
use Time::HiRes qw(time sleep);
use SipTest qw(parse_msg rand_token wait_until response_to);
use SipRegTest;
use SipWs;

my $t = SipRegTest->new(
    server_conf => <<"EOC",
LoadModule status_module $SipTest::MODDIR/mod_status.so
<Location /sip>
    SipWebSocket On
</Location>
<Location /server-status>
    SetHandler server-status
</Location>
EOC
);
my $hp = $t->http_port;
my $sp = $t->sip_port;

sub flows_dead { return $t->sip_counters->{SipFlowsDead} // -1 }

# A browser: its WebSocket, its .invalid host, its user.
sub browser {
    my ($user) = @_;
    my $ws = SipWs->connect(port => $hp, path => '/sip');
    return undef unless $ws && $ws->status == 101;
    return { ws => $ws, host => rand_token(8) . '.invalid', user => $user };
}

sub contact_of { my $b = shift; return "sip:$b->{user}\@$b->{host};transport=ws" }

# A request as a browser writes it (Via SIP/2.0/WS with its made-up host).
sub ws_request {
    my ($b, %a) = @_;
    my $r = $t->sip_request(transport => 'WS', via_port => 0, %a);
    $r =~ s{SIP/2\.0/WS 127\.0\.0\.1:0}{SIP/2.0/WS $b->{host}};
    return $r;
}

sub ws_register {
    my ($b, %o) = @_;
    my $aor = "sip:$b->{user}\@127.0.0.1:$sp";
    $b->{ws}->send_text(ws_request($b, method => 'REGISTER', uri => "sip:127.0.0.1:$sp",
                                   to => "<$aor>", from => "<$aor>;tag=" . rand_token(6),
                                   headers => [ Contact => '<' . ($o{contact} // contact_of($b)) . '>',
                                                Expires => 600 ]));
    return next_msg($b, sub { $_[0]->is_response && $_[0]->code >= 200 });
}

# The next message on the browser's WebSocket for which $want returns true.
sub next_msg {
    my ($b, $want, $timeout) = @_;
    my $end = time + ($timeout // 3);
    while ((my $left = $end - time) > 0) {
        my $p = $b->{ws}->recv_msg($left) // return undef;
        my $m = parse_msg($p);
        return $m if $want->($m);
    }
    return undef;
}
sub next_request { my ($b, $method) = @_; return next_msg($b, sub { !$_[0]->is_response && $_[0]->method eq $method }) }
sub next_final { my ($b, $method) = @_;
                 return next_msg($b, sub { $_[0]->is_response && $_[0]->code >= 200 && $_[0]->header('cseq') =~ /$method/ }) }

sub udp_final {
    my ($u, $method, $timeout) = @_;
    my $end = time + ($timeout // 3);
    while ((my $left = $end - time) > 0) {
        my $d = $t->udp_recv($u, $left) // return undef;
        my $m = parse_msg($d);
        return $m if $m->is_response && $m->code >= 200 && $m->header('cseq') =~ /$method/;
    }
    return undef;
}

# An in-dialog request (ACK, BYE) with a Route header.
sub in_dialog {
    my (%a) = @_;
    return "$a{method} $a{uri} SIP/2.0\r\nVia: $a{via};branch=z9hG4bK" . rand_token(10) . "\r\n"
        . ($a{route} ? "Route: $a{route}\r\n" : '') . "Max-Forwards: 70\r\nFrom: $a{from}\r\nTo: $a{to}\r\n"
        . "Call-ID: $a{cid}\r\nCSeq: $a{cseq} $a{method}\r\nContent-Length: 0\r\n\r\n";
}

# ---- 1. a UDP caller reaches the browser on its WebSocket
my $bob = browser('bob') or BAIL_OUT('no WebSocket upgrade');
my $r = ws_register($bob);
is($r && $r->code, 200, 'bob registers over WebSocket');
like(join(',', $r ? $r->headers('contact') : ()), qr/<\Q${\ contact_of($bob)}\E>;expires=\d+/,
     '... the 200 lists his Contact as registered');

my $u = $t->udp_socket;
my $cid = rand_token(12) . '@flows-ws1';
$t->udp_send($t->sip_request(method => 'INVITE', uri => $t->aor('bob'), sock => $u, call_id => $cid,
                             from_tag => 'caller1',
                             headers => [ Contact => '<sip:caller@127.0.0.1:' . $u->sockport . '>' ]), sock => $u);
my $inv = next_request($bob, 'INVITE');
ok($inv, 'an INVITE from a UDP caller reaches bob on his WebSocket');
is($inv && $inv->uri, contact_of($bob), '... Request-URI: his Contact (an .invalid host)');
like($inv ? ($inv->header_elems('via'))[0] : '', qr{^SIP/2\.0/WS 127\.0\.0\.1:$sp;}, '... our Via says WS');
my @rr = $inv ? $inv->header_elems('record-route') : ();
is(scalar @rr, 2, '... two Record-Route entries (RFC 5658)');
like($rr[0] // '', qr/^<sip:127\.0\.0\.1:$sp;transport=ws;flow=[0-9a-f]{16};lr;ftag=caller1;rs=[0-9a-f]{16}>$/,
     '... the one facing the browser has ;transport=ws (RFC 7118 §5) and the flow');
like($rr[1] // '', qr/^<sip:127\.0\.0\.1:$sp;lr;ftag=caller1;/, '... the other faces the UDP caller');
if ($inv) {
    $bob->{ws}->send_text(response_to($inv, 180, 'Ringing', tag => 'bob1', rr => 1));
    $bob->{ws}->send_text(response_to($inv, 200, 'OK', tag => 'bob1', rr => 1, contact => contact_of($bob)));
}
my $fin = udp_final($u, 'INVITE');
is($fin && $fin->code, 200, "the caller gets bob's 200");
my $route = join(', ', reverse($fin ? $fin->header_elems('record-route') : ()));
my %dlg = (uri => contact_of($bob), via => 'SIP/2.0/UDP 127.0.0.1:' . $u->sockport,
           route => $route, from => '<sip:tester@127.0.0.1>;tag=caller1', to => $fin ? $fin->header('to') : '',
           cid => $cid);
$t->udp_send(in_dialog(%dlg, method => 'ACK', cseq => 1), sock => $u);
ok(next_request($bob, 'ACK'), "the caller's ACK reaches the browser (route set -> flow)");
$t->udp_send(in_dialog(%dlg, method => 'BYE', cseq => 2), sock => $u);
my $bye = next_request($bob, 'BYE');
ok($bye, "the caller's BYE reaches the browser");
$bob->{ws}->send_text(response_to($bye, 200, 'OK')) if $bye;
my $bf = udp_final($u, 'BYE');
is($bf && $bf->code, 200, "... and the browser's 200 reaches the caller");

# ---- 2. the browser calls a UDP phone; that phone hangs up
{
    my $cu = $t->udp_socket;
    my $carol = 'sip:carol@127.0.0.1:' . $cu->sockport;
    my $rc = $t->register(user => 'carol', contacts => [ "<$carol>" ], expires => 600);
    is($rc && $rc->code, 200, 'carol registers over UDP');
    my $cid2 = rand_token(12) . '@flows-ws2';
    $bob->{ws}->send_text(ws_request($bob, method => 'INVITE', uri => $t->aor('carol'), call_id => $cid2,
                                     from => "<sip:bob\@127.0.0.1:$sp>;tag=bob2",
                                     headers => [ Contact => '<' . contact_of($bob) . '>' ]));
    my $in = parse_msg($t->udp_new_request($cu, 3, 'INVITE') // '');
    ok($in && $in->method eq 'INVITE', 'the browser calls carol: the INVITE reaches her over UDP');
    my @rr2 = $in ? $in->header_elems('record-route') : ();
    like($rr2[1] // '', qr/;transport=ws;flow=[0-9a-f]{16};lr;/, '... the Record-Route facing the browser names its flow');
    $t->udp_send(response_to($in, 200, 'OK', tag => 'carol2', rr => 1, contact => $carol), sock => $cu) if $in;
    my $ok = next_final($bob, 'INVITE');
    is($ok && $ok->code, 200, 'the browser gets the 200');
    my %d2 = (uri => contact_of($bob), via => 'SIP/2.0/UDP 127.0.0.1:' . $cu->sockport, route => join(', ', @rr2),
              from => ($in ? $in->header('to') : '') . ';tag=carol2', to => $in ? $in->header('from') : '', cid => $cid2);
    $t->udp_send(in_dialog(%d2, method => 'BYE', cseq => 9), sock => $cu);
    my $b2 = next_request($bob, 'BYE');
    ok($b2, "carol's BYE reaches the browser on its WebSocket");
    $bob->{ws}->send_text(response_to($b2, 200, 'OK')) if $b2;
    my $f2 = udp_final($cu, 'BYE');
    is($f2 && $f2->code, 200, "... and its 200 reaches carol");
}

# ---- 3. browser to browser
{
    my $ann = browser('ann') or BAIL_OUT('no WebSocket upgrade');
    my $ra = ws_register($ann);
    is($ra && $ra->code, 200, 'ann registers over another WebSocket');
    my $cid3 = rand_token(12) . '@flows-ws3';
    $ann->{ws}->send_text(ws_request($ann, method => 'INVITE', uri => $t->aor('bob'), call_id => $cid3,
                                     from => "<sip:ann\@127.0.0.1:$sp>;tag=ann3",
                                     headers => [ Contact => '<' . contact_of($ann) . '>' ]));
    my $in = next_request($bob, 'INVITE');
    ok($in, "ann's INVITE reaches bob's WebSocket");
    my @rr3 = $in ? $in->header_elems('record-route') : ();
    is(scalar @rr3, 2, '... two Record-Route entries: one per flow');
    my ($f0) = ($rr3[0] // '') =~ /flow=([0-9a-f]+)/;
    my ($f1) = ($rr3[1] // '') =~ /flow=([0-9a-f]+)/;
    ok($f0 && $f1 && $f0 ne $f1, '... naming two different flows');
    $bob->{ws}->send_text(response_to($in, 200, 'OK', tag => 'bob3', rr => 1, contact => contact_of($bob))) if $in;
    my $ok = next_final($ann, 'INVITE');
    is($ok && $ok->code, 200, 'ann gets the 200');
    $bob->{ws}->send_text(in_dialog(uri => contact_of($ann), via => "SIP/2.0/WS $bob->{host}", route => join(', ', @rr3),
                                    from => ($in ? $in->header('to') : '') . ';tag=bob3',
                                    to => $in ? $in->header('from') : '', cid => $cid3, method => 'BYE', cseq => 5));
    my $b3 = next_request($ann, 'BYE');
    ok($b3, "bob's BYE reaches ann on her WebSocket");
    $ann->{ws}->send_text(response_to($b3, 200, 'OK')) if $b3;
    my $f3 = next_final($bob, 'BYE');
    is($f3 && $f3->code, 200, "... and her 200 reaches bob on his");
    $ann->{ws}->close;
}

# ---- 4. a Contact without ;transport=ws is accepted
{
    my $cy = browser('cyd') or BAIL_OUT('no WebSocket upgrade');
    my $rr = ws_register($cy, contact => "sip:cyd\@$cy->{host}");
    is($rr && $rr->code, 200, 'a REGISTER over WS whose Contact lacks ;transport=ws: 200 (lenient)');
    my $u4 = $t->udp_socket;
    $t->udp_send($t->sip_request(method => 'MESSAGE', uri => $t->aor('cyd'), sock => $u4, body => 'hi',
                                 content_type => 'text/plain'), sock => $u4);
    my $msg = next_request($cy, 'MESSAGE');
    ok($msg, '... and it is reached on its connection all the same');
    $cy->{ws}->send_text(response_to($msg, 200, 'OK', tag => 'c4')) if $msg;
    $cy->{ws}->close;
}

# ---- 5. the WebSocket closes: 480 at once, from every engine
# With several engines (SIP_TEST_ENGINES) the kernel spreads UDP sources
# between them by port: INVITEs from new ports until every engine has
# answered one (its mark is in the To tag, "mS<mark>"); each 480 counts,
# whichever engine gives it, the one holding the closed WebSocket or not.
{
    my $before = flows_dead();
    my $engines = $ENV{SIP_TEST_ENGINES} || 1;
    $bob->{ws}->close;
    sleep 0.3;
    my (%marks, $sent, $ok480, $slow);
    for my $i (1 .. 24) {
        my $u5 = $t->udp_socket;
        my $raw = $t->sip_request(method => 'INVITE', uri => $t->aor('bob'), sock => $u5,
                                  headers => [ Contact => '<sip:caller@127.0.0.1:' . $u5->sockport . '>' ]);
        my $t0 = time;
        $t->udp_send($raw, sock => $u5);
        $sent++;
        my $f = udp_final($u5, 'INVITE', 5);
        my $took = time - $t0;
        $ok480++ if $f && $f->code == 480;
        $slow = $took if $took >= 1 && (!defined $slow || $took > $slow);
        my ($mark) = ($f ? $f->header('to') // '' : '') =~ /;tag=mS(\w)/;
        $marks{$mark // '?'}++;
        $t->udp_send($t->ack_for($raw, $f), sock => $u5) if $f;
        last if $i >= 2 && keys(%marks) >= $engines;
    }
    is($ok480, $sent, "bob's WebSocket closed: each of $sent INVITEs to bob gets 480");
    ok(!defined $slow, sprintf('... at once (slowest over 1 s: %s)', $slow // 'none'));
    is(scalar(grep { $_ ne '?' } keys %marks), $engines,
       "... given by every engine ($engines; marks: " . join(',', sort keys %marks) . ')');
    ok(wait_until(3, sub { flows_dead() == $before + $sent }),
       "SipFlowsDead counted each (+$sent; now " . (flows_dead() - $before) . ')');
    like($t->_log_tail, qr/bob.*not used: its WS connection is closed/, '... and the log says why');
    # a request in a dialog whose route names that flow: 430 (RFC 5626 §5.3)
    $t->udp_send(in_dialog(%dlg, method => 'BYE', cseq => 3), sock => $u);
    my $f430 = udp_final($u, 'BYE');
    is($f430 && $f430->code, 430, 'an in-dialog BYE routed to the closed flow: 430 Flow Failed');
}

$t->stop;
done_testing;
