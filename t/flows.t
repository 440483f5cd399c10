#!/usr/bin/perl
# Registrations over connections are flows (RFC 5626 §5.3, RFC 7118 §5,
# issue 16 item 4), shown with plain TCP connections from Perl clients:
#   - an INVITE from a UDP caller reaches a user registered over TCP on that
#     very connection, though its Contact names a port nobody listens on;
#     Via SIP/2.0/TCP, a double Record-Route whose TCP side names the flow;
#     the ACK and the caller's BYE follow the route set onto the connection;
#   - a caller over TCP with ;ob gets the callee's BYE on its connection;
#   - after the connection closes, a ;ob binding answers 480 at once (timed)
#     and SipFlowsDead counts it; a binding without ;ob goes back to its
#     Contact (today's behaviour); a dead flow next to a live UDP binding:
#     the call goes to the UDP one;
#   - a re-REGISTER on a new connection replaces the flow;
#   - a SIP-CGI script forwarding to a registered user uses the flow too;
#   - after an engine restart a ;ob binding (its flow lost) is not used;
#   - the same with the mod_dbd store (SQLite).
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use IO::Socket::INET;
use IO::Select;
use File::Temp ();
use SipTest qw(parse_msg rand_token free_port wait_until response_to);
use SipRegTest;

my $STATUS_CONF = <<"EOC";
LoadModule status_module $SipTest::MODDIR/mod_status.so
<Location /server-status>
    SetHandler server-status
</Location>
EOC

my $t = SipRegTest->new(server_conf => $STATUS_CONF,
                        scripts => { 'fwd@127.0.0.1' => "#!/bin/sh\n"
                                     . "printf 'CGI-PROXY-REQUEST sip:kim\@127.0.0.1:\@SIPPORT\@ SIP/2.0\\n\\n'\n" });
my $port = $t->sip_port;

sub flows_dead { return $t->sip_counters->{SipFlowsDead} // -1 }

# REGISTER $user with $contact over TCP connection $c (opened when undef);
# returns ($c, final response).
sub reg_tcp {
    my ($user, $contact, %o) = @_;
    my $c = $o{conn} // $t->tcp_connect or die "connect: $!";
    my $r = $t->register(user => $user, transport => 'tcp', sock => $c, contacts => [ "<$contact>" ],
                         expires => 600, call_id => $o{call_id}, cseq => $o{cseq});
    return ($c, $r);
}

# The next request of $method on TCP connection $c (undef after $timeout).
sub tcp_request_of {
    my ($c, $method, $timeout) = @_;
    my $end = time + ($timeout // 3);
    while ((my $left = $end - time) > 0) {
        my $m = $t->read_response($c, $left) or return undef;
        return $m if !$m->is_response && $m->method eq $method;
    }
    return undef;
}

# An INVITE to $user from a new UDP caller; returns (socket, raw INVITE).
sub invite_from_udp {
    my ($user, %o) = @_;
    my $u = $t->udp_socket;
    my $raw = $t->sip_request(method => 'INVITE', uri => $t->aor($user), sock => $u,
                              call_id => $o{call_id} // rand_token(12) . '@flows',
                              from_tag => $o{from_tag} // rand_token(6),
                              headers => [ Contact => '<sip:caller@127.0.0.1:' . $u->sockport . '>' ]);
    $t->udp_send($raw, sock => $u);
    return ($u, $raw);
}

# Responses on UDP socket $u until a final one; the final (Msg) or undef.
sub udp_final {
    my ($u, $timeout) = @_;
    my $end = time + ($timeout // 3);
    while ((my $left = $end - time) > 0) {
        my $d = $t->udp_recv($u, $left) // return undef;
        my $m = parse_msg($d);
        return $m if $m->is_response && $m->code >= 200 && $m->header('cseq') =~ /INVITE/;
    }
    return undef;
}

sub ack_non2xx {
    my ($u, $raw, $fin) = @_;
    my $ack = $t->ack_for($raw, $fin);
    $t->udp_send($ack, sock => $u) if $ack;
}

my $nobody = free_port();      # a port nobody listens on

# ---- 1. a user registered over TCP is called on that connection
my $bob_contact = "sip:bob\@127.0.0.1:$nobody;transport=tcp";
my ($bc, $r) = reg_tcp('bob', $bob_contact);
is($r && $r->code, 200, 'bob REGISTERs over TCP: 200');
like(join(',', $r ? $r->headers('contact') : ()), qr/<\Q$bob_contact\E>;expires=\d+/,
     '... the 200 lists the Contact as registered');

my $cid = rand_token(12) . '@flows-1';
my ($u, $inv_raw) = invite_from_udp('bob', call_id => $cid, from_tag => 'caller1');
my $inv = tcp_request_of($bc, 'INVITE');
ok($inv, 'the INVITE from a UDP caller reaches bob on his registration connection');
is($inv && $inv->uri, $bob_contact, '... Request-URI: the registered Contact');
like($inv ? ($inv->header_elems('via'))[0] : '', qr{^SIP/2\.0/TCP 127\.0\.0\.1:$port;}, '... our Via says TCP');
my @rr = $inv ? $inv->header_elems('record-route') : ();
is(scalar @rr, 2, '... two Record-Route entries (RFC 5658: UDP in, TCP out)');
like($rr[0] // '', qr/^<sip:127\.0\.0\.1:$port;transport=tcp;flow=[0-9a-f]{16};lr;ftag=caller1;rs=[0-9a-f]{16}>$/,
     '... the top one, facing bob, names the flow');
like($rr[1] // '', qr/^<sip:127\.0\.0\.1:$port;lr;ftag=caller1;rs=[0-9a-f]{16}>$/, '... the other faces the UDP caller');

# bob answers 200; the caller ACKs and hangs up along the route set
if ($inv) {
    $t->send_raw($bc, response_to($inv, 200, 'OK', tag => 'bobtag', rr => 1, contact => $bob_contact));
}
my $fin = udp_final($u);
is($fin && $fin->code, 200, 'the caller gets the 200 over UDP');
my @route = reverse($fin ? $fin->header_elems('record-route') : ());
my $route_hdr = join(', ', @route);
my $to = $fin ? $fin->header('to') : '';
for my $m ([ 'ACK', 1 ], [ 'BYE', 2 ]) {
    my ($meth, $cseq) = @$m;
    my $raw = "$meth $bob_contact SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:" . $u->sockport . ";branch=z9hG4bK" . rand_token(10)
        . ";rport\r\nRoute: $route_hdr\r\nMax-Forwards: 70\r\nFrom: <sip:tester\@127.0.0.1>;tag=caller1\r\n"
        . "To: $to\r\nCall-ID: $cid\r\nCSeq: $cseq $meth\r\nContent-Length: 0\r\n\r\n";
    $t->udp_send($raw, sock => $u);
    my $got = tcp_request_of($bc, $meth);
    ok($got, "the caller's $meth follows the route set onto bob's connection");
    if ($got && $meth eq 'BYE') {
        $t->send_raw($bc, response_to($got, 200, 'OK'));
        my $br = udp_final_any($u, 'BYE');
        is($br && $br->code, 200, '... and bob\'s 200 for the BYE reaches the caller');
    }
}

sub udp_final_any {
    my ($s, $method) = @_;
    my $end = time + 3;
    while ((my $left = $end - time) > 0) {
        my $d = $t->udp_recv($s, $left) // return undef;
        my $m = parse_msg($d);
        return $m if $m->is_response && $m->code >= 200 && $m->header('cseq') =~ /$method/;
    }
    return undef;
}

# ---- 2. a caller over TCP with ;ob: the callee's BYE comes back on its connection
{
    my $cu = $t->udp_socket;
    my $carol = 'sip:carol@127.0.0.1:' . $cu->sockport;
    my $rc = $t->register(user => 'carol', contacts => [ "<$carol>" ], expires => 600);
    is($rc && $rc->code, 200, 'carol REGISTERs over UDP');
    my $ac = $t->tcp_connect or die;
    my $alice = "sip:alice\@127.0.0.1:$nobody;transport=tcp;ob";
    my $cid2 = rand_token(12) . '@flows-2';
    my $inv2 = $t->sip_request(method => 'INVITE', uri => $t->aor('carol'), transport => 'TCP', sock => $ac,
                               call_id => $cid2, from_tag => 'alice2', headers => [ Contact => "<$alice>" ]);
    $t->send_raw($ac, $inv2);
    my $in = parse_msg($t->udp_new_request($cu, 3, 'INVITE') // '');
    ok($in && $in->method eq 'INVITE', 'alice (TCP, Contact ;ob) calls carol: the INVITE reaches carol over UDP');
    my @rr2 = $in ? $in->header_elems('record-route') : ();
    like($rr2[1] // '', qr/^<sip:127\.0\.0\.1:$port;transport=tcp;flow=[0-9a-f]{16};lr;/,
         '... the Record-Route facing alice names her flow');
    $t->udp_send(response_to($in, 200, 'OK', tag => 'carol2', rr => 1, contact => $carol), sock => $cu) if $in;
    my @resp = $t->read_until_final($ac, 3);
    is(@resp ? $resp[-1]->code : 0, 200, 'alice gets the 200 on her connection');
    # carol hangs up: Route as Record-Route (she is the UAS), Request-URI alice's Contact
    my $bye = "BYE $alice SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:" . $cu->sockport . ";branch=z9hG4bK" . rand_token(10)
        . ";rport\r\nRoute: " . join(', ', @rr2) . "\r\nMax-Forwards: 70\r\nFrom: " . ($in ? $in->header('to') : '')
        . ";tag=carol2\r\nTo: " . ($in ? $in->header('from') : '') . "\r\nCall-ID: $cid2\r\nCSeq: 7 BYE\r\nContent-Length: 0\r\n\r\n";
    $t->udp_send($bye, sock => $cu);
    my $got = tcp_request_of($ac, 'BYE');
    ok($got, "carol's BYE reaches alice on her connection (her Contact names a port nobody listens on)");
    like($got ? ($got->header_elems('via'))[0] : '', qr{^SIP/2\.0/TCP }, '... with a TCP Via of ours');
    if ($got) {
        $t->send_raw($ac, response_to($got, 200, 'OK'));
        my $br = udp_final_any($cu, 'BYE');
        is($br && $br->code, 200, "... alice's 200 for it reaches carol");
    }
    close $ac;
}

# ---- 3. the flow closes: ;ob -> 480 at once; without ;ob -> the Contact again
my $dead0 = flows_dead();
{
    my $dave = "sip:dave\@127.0.0.1:$nobody;transport=tcp;ob";
    my ($dc, $rd) = reg_tcp('dave', $dave);
    is($rd && $rd->code, 200, 'dave REGISTERs over TCP with ;ob');
    close $dc;
    sleep 0.3;      # the engine sees the close
    my $t0 = time;
    my ($du, $draw) = invite_from_udp('dave');
    my $f = udp_final($du, 5);
    my $took = time - $t0;
    is($f && $f->code, 480, 'his connection closed: an INVITE to dave gets 480');
    cmp_ok($took, '<', 1, sprintf('... at once (%.3f s), not after a timeout', $took));
    ack_non2xx($du, $draw, $f) if $f;
    ok(wait_until(3, sub { flows_dead() == $dead0 + 1 }), 'SipFlowsDead counted it');
    like($t->_log_tail, qr/dave.*not used: its TCP connection is closed/, '... and the log says why');
}
{
    my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 5, Proto => 'tcp', ReuseAddr => 1)
        or die "listen: $!";
    my $erin = 'sip:erin@127.0.0.1:' . $l->sockport . ';transport=tcp';
    my ($ec, $re) = reg_tcp('erin', $erin);
    is($re && $re->code, 200, 'erin REGISTERs over TCP without ;ob, Contact at a listener of hers');
    my ($eu) = invite_from_udp('erin');
    ok(tcp_request_of($ec, 'INVITE'), '... called on her registration connection while it is open');
    ok(!IO::Select->new($l)->can_read(0.3), '... and not at her Contact');
    udp_final($eu, 0.2);
    close $ec;
    sleep 0.3;
    my ($eu2) = invite_from_udp('erin');
    my $lc = SipTest::accept_on($l, 3);
    my $m = $lc ? tcp_request_of($lc, 'INVITE') : undef;
    ok($m, 'after it closed, the INVITE goes to her Contact (a new TCP connection)');
    close $lc if $lc;
}

# ---- 4. a dead flow and a live UDP binding: the call goes to the live one
{
    my $fu = $t->udp_socket;
    my $frank_udp = 'sip:frank-pc@127.0.0.1:' . $fu->sockport;
    my ($fc, $rf) = reg_tcp('frank', "sip:frank\@127.0.0.1:$nobody;transport=tcp;ob");
    is($rf && $rf->code, 200, 'frank REGISTERs a ;ob contact over TCP');
    my $rf2 = $t->register(user => 'frank', contacts => [ "<$frank_udp>" ], expires => 600);
    is($rf2 && $rf2->code, 200, '... and a UDP contact');
    close $fc;
    sleep 0.3;
    my $before = flows_dead();
    my ($fu2) = invite_from_udp('frank');
    my $got = $t->udp_new_request($fu, 3, 'INVITE');
    ok($got, 'his TCP connection closed: the INVITE goes to the UDP binding');
    is(flows_dead(), $before, '... and SipFlowsDead did not move');
}

# ---- 5. a re-REGISTER on a new connection replaces the flow
{
    my $gina = "sip:gina\@127.0.0.1:$nobody;transport=tcp;ob";
    my $gcid = rand_token(10) . '@flows-g';
    my ($g1, $r1) = reg_tcp('gina', $gina, call_id => $gcid, cseq => 1);
    my ($g2, $r2) = reg_tcp('gina', $gina, call_id => $gcid, cseq => 2);
    ok($r1 && $r1->code == 200 && $r2 && $r2->code == 200, 'gina REGISTERs on one connection, then again on a second');
    my ($gu) = invite_from_udp('gina');
    ok(tcp_request_of($g2, 'INVITE'), 'the INVITE comes on the second connection');
    ok(!IO::Select->new($g1)->can_read(0.3), '... not on the first');
    udp_final($gu, 0.2);
    close $g2;
    sleep 0.3;
    my ($gu2, $graw) = invite_from_udp('gina');
    my $f = udp_final($gu2, 3);
    is($f && $f->code, 480, 'the second closed: 480, though the first is still open');
    ack_non2xx($gu2, $graw, $f) if $f;
    close $g1;
}

# ---- 5b. a SIP-CGI script forwarding to a user of ours uses her flow too
{
    my ($kc, $rk) = reg_tcp('kim', "sip:kim\@127.0.0.1:$nobody;transport=tcp;ob");
    is($rk && $rk->code, 200, 'kim REGISTERs a ;ob contact over TCP');
    my ($ku, $kraw) = invite_from_udp('fwd');
    my $in = tcp_request_of($kc, 'INVITE', 5);
    ok($in, "a script's CGI-PROXY-REQUEST to kim reaches her connection");
    $t->send_raw($kc, response_to($in, 486, 'Busy Here', tag => 'kim1')) if $in;
    my $f = udp_final($ku, 5);
    is($f && $f->code, 486, '... her answer reaches the caller');
    ack_non2xx($ku, $kraw, $f) if $f;
    close $kc;
    sleep 0.3;
    my $before = flows_dead();
    my ($ku2, $kraw2) = invite_from_udp('fwd');
    my $f2 = udp_final($ku2, 5);
    is($f2 && $f2->code, 480, 'her connection closed: the script\'s forward ends in 480');
    ack_non2xx($ku2, $kraw2, $f2) if $f2;
    is(flows_dead(), $before + 1, '... counted in SipFlowsDead');
}

# ---- 6. a flow does not survive an engine restart
{
    my ($hc, $rh) = reg_tcp('hank', "sip:hank\@127.0.0.1:$nobody;transport=tcp;ob");
    is($rh && $rh->code, 200, 'hank REGISTERs a ;ob contact over TCP');
    my $old = $t->engine_pid;
    $t->apachectl('graceful');
    ok(wait_until(10, sub { my $p = $t->engine_pid; $p && $p != $old && $t->options_ok('udp') }),
       'graceful restart: a new engine answers');
    my ($f2, %b) = $t->fetch('hank');
    ok(scalar(grep { /hank/ } keys %b), '... hank\'s binding is restored from the journal');
    my ($hu, $hraw) = invite_from_udp('hank');
    my $f = udp_final($hu, 3);
    is($f && $f->code, 480, '... but its connection is not: an INVITE to hank gets 480');
    ack_non2xx($hu, $hraw, $f) if $f;
    close $hc;
}

$t->stop;

# ---- 7. the same with the mod_dbd store (SQLite): flows kept by the engine
{
    my $dbdir = File::Temp::tempdir('mod_sip_flows_XXXXXX', TMPDIR => 1, CLEANUP => 1);
    chmod 0777, $dbdir;
    $t = SipRegTest->new(server_conf => "LoadModule dbd_module $SipTest::MODDIR/mod_dbd.so\n"
                                        . "DBDriver sqlite3\nDBDParams \"$dbdir/location.db\"\nSipLocation dbd\n");
    my $iris = "sip:iris\@127.0.0.1:$nobody;transport=tcp;ob";
    my ($ic, $ri) = reg_tcp('iris', $iris);
    is($ri && $ri->code, 200, 'dbd store: iris REGISTERs a ;ob contact over TCP');
    my ($iu) = invite_from_udp('iris');
    ok(tcp_request_of($ic, 'INVITE'), 'dbd store: she is called on her connection');
    udp_final($iu, 0.2);
    close $ic;
    sleep 0.3;
    my ($iu2, $iraw) = invite_from_udp('iris');
    my $t0 = time;
    my $f = udp_final($iu2, 5);
    is($f && $f->code, 480, 'dbd store: her connection closed: 480');
    cmp_ok(time - $t0, '<', 1, 'dbd store: ... at once');
    ack_non2xx($iu2, $iraw, $f) if $f;
    my ($ic2, $ri2) = reg_tcp('iris', $iris);
    my ($iu3) = invite_from_udp('iris');
    ok(tcp_request_of($ic2, 'INVITE'), 'dbd store: registered again on a new connection: called there');
    udp_final($iu3, 0.2);
    my $old = $t->engine_pid;
    $t->apachectl('graceful');
    ok(wait_until(10, sub { my $p = $t->engine_pid; $p && $p != $old && $t->options_ok('udp') }),
       'dbd store: graceful restart');
    my ($iu4, $iraw4) = invite_from_udp('iris');
    my $f4 = udp_final($iu4, 5);
    is($f4 && $f4->code, 480, 'dbd store: after the restart the binding (made over TCP, ;ob) is not used: 480');
    ack_non2xx($iu4, $iraw4, $f4) if $f4;
    close $ic2;
    $t->stop;
}
done_testing;
