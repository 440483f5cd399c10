#!/usr/bin/perl
# Proxy error paths with raw sockets (RFC 3261 §16.3, §16.7, §16.11):
# Max-Forwards 0 (483), loops (482), SipProxyOutside Off (404, nothing
# forwarded), unreachable TCP next hop (503 -> 500), and stateless
# forwarding of responses to what we forwarded statelessly (only those).
use strict;
use warnings;
use Test::More;
use IO::Socket::INET;
use IO::Select;
use Time::HiRes qw(time sleep);
use SipTest qw(free_port parse_msg rand_token);

my $t = SipTest->new(vhost_conf => 'SipProxyOutside On');
my $port = $t->sip_port;

sub cid { return $_[0] . '-' . rand_token(10) . '@127.0.0.1' }

# A UDP socket bound to a free port, standing for a next hop.
sub hop { my $p = free_port(); return ($t->udp_socket(port => $p), $p) }

sub silent {
    my ($s, $secs, $name) = @_;
    my @d = $t->udp_collect($s, $secs);
    ok(!@d, $name) or diag(join "\n--\n", map { $_->[1] } @d);
}

# Send a request over UDP from a fresh socket, return (socket, raw, responses).
sub udp_send_req {
    my (%a) = @_;
    my $timeout = delete $a{timeout} // 3;
    my $s = $t->udp_socket;
    my $raw = $t->sip_request(sock => $s, %a);
    my @r = $t->udp_req($raw, $timeout, sock => $s);
    return ($s, $raw, @r);
}

sub codes { join ' ', map { $_->code } @_ }

# ---- Max-Forwards: 0 for a foreign Request-URI -> 483, nothing forwarded
{
    my ($hs, $hp) = hop();
    for my $m (qw(OPTIONS INVITE)) {
        my $mark = $t->log_mark;
        my ($s, $raw, @r) = udp_send_req(method => $m, uri => "sip:bob\@127.0.0.1:$hp", max_forwards => 0,
                                         call_id => cid("mf0-$m"));
        is(@r ? $r[-1]->code : 0, 483, "$m Max-Forwards 0 to a foreign URI: 483 Too Many Hops")
            or diag("responses: " . codes(@r));
        like($t->log_since($mark), qr/sip: 483 Too Many Hops for $m sip:bob\@127\.0\.0\.1:$hp from 127\.0\.0\.1: Max-Forwards is 0/,
             "$m 483: one info line in the error log says why");
        $t->check_mirrored($raw, $r[-1], "$m 483", src_port => $s->sockport) if @r && $r[-1]->code == 483;
        $t->udp_send($t->ack_for($raw, $r[-1]), sock => $s) if $m eq 'INVITE' && @r;
    }
    silent($hs, 1, 'Max-Forwards 0: nothing reached the target');

    # Max-Forwards 1 is forwarded with Max-Forwards 0
    my $s = $t->udp_socket;
    my $raw = $t->sip_request(method => 'OPTIONS', sock => $s, uri => "sip:bob\@127.0.0.1:$hp",
                              max_forwards => 1, call_id => cid('mf1'));
    $t->udp_send($raw, sock => $s);
    my $fwd = parse_msg($t->udp_recv($hs, 3));
    ok($fwd && ($fwd->method // '') eq 'OPTIONS', 'Max-Forwards 1: forwarded');
    is($fwd && $fwd->header('max-forwards'), '0', 'Max-Forwards 1: forwarded with Max-Forwards 0');
}

# ---- Max-Forwards: 0 OPTIONS for the server itself: answered by the server
{
    my ($s, $raw, @r) = udp_send_req(method => 'OPTIONS', uri => "sip:nobody\@127.0.0.1:$port",
                                     max_forwards => 0, call_id => cid('mf0-self'));
    is(@r ? $r[-1]->code : 0, 200, 'OPTIONS Max-Forwards 0 to the server itself: 200');
    like(@r ? ($r[-1]->header('allow') // '') : '', qr/INVITE/, '... the server\'s own answer (Allow header)');
}

# ---- a loop: localhost is not ServerName 127.0.0.1, so sip:x@localhost:PORT
#      is proxied to 127.0.0.1:PORT, i.e. back to the server -> 482
for my $m (qw(OPTIONS INVITE)) {
    my $mark = $t->log_mark;
    my $t0 = time;
    my ($s, $raw, @r) = udp_send_req(method => $m, uri => "sip:x\@localhost:$port", call_id => cid("loop-$m"),
                                     timeout => 10);
    is(@r ? $r[-1]->code : 0, 482, "$m sip:x\@localhost:$port (proxied to itself): 482 Loop Detected")
        or diag("responses: " . codes(@r) . "\n" . $t->log_since($mark));
    like($t->log_since($mark), qr/sip: 482 Loop Detected for $m sip:x\@localhost:$port from /, "$m 482: logged");
    cmp_ok(time - $t0, '<', 5, "$m loop: final response within 5 s");
    if (@r) {
        my @v = $r[-1]->header_elems('via');
        ok(@v == 1, "$m loop: final response has only our Via") or diag($r[-1]->head);
        $t->udp_send($t->ack_for($raw, $r[-1]), sock => $s) if $m eq 'INVITE';
    }
    is(scalar(grep { $_->code == 100 } @r), $m eq 'INVITE' ? 1 : 0,
       $m eq 'INVITE' ? 'INVITE loop: one 100 Trying' : 'OPTIONS loop: no 100 Trying');
}

# ---- next hop over TCP with nothing listening -> 503 for the branch -> 500
{
    my $closed = free_port();
    for my $m (qw(OPTIONS INVITE)) {
        my $t0 = time;
        my ($s, $raw, @r) = udp_send_req(method => $m, uri => "sip:bob\@127.0.0.1:$closed;transport=tcp",
                                         call_id => cid("tcpclosed-$m"), timeout => 10);
        my $el = time - $t0;
        is(@r ? $r[-1]->code : 0, 500, "$m to a closed TCP port: 500 (the branch's 503 converted)")
            or diag("responses: " . codes(@r));
        cmp_ok($el, '<', 5, sprintf("$m to a closed TCP port: answered within 5 s (%.2fs)", $el));
        if (@r) {
            my @v = $r[-1]->header_elems('via');
            ok(@v == 1 && $v[0] =~ /:\Q${\ $s->sockport}\E;/, "$m closed TCP port: final response has only our Via");
            $t->udp_send($t->ack_for($raw, $r[-1]), sock => $s) if $m eq 'INVITE';
        }
    }
}

# ---- responses matching no transaction (§16.7 step 1, §16.11, §18.2.2).
# Only a response to a request we forwarded statelessly (a CANCEL without
# transaction here, SipProxyOutside On) is forwarded by its next Via: our
# branch in it is signed for that Via.  A response with our Via forged on
# top of anyone's is dropped (it made the proxy a reflector).

# A foreign CANCEL from $from (UDP or a TCP socket) with Via $via, forwarded
# statelessly to the next hop $bs: returns the forwarded CANCEL (parsed).
sub stateless_cancel {
    my ($bs, $bp, %a) = @_;
    my $raw = $t->sip_request(method => 'CANCEL', uri => "sip:carol\@127.0.0.1:$bp", call_id => cid('slc'), %a);
    if ($a{transport} && $a{transport} eq 'TCP') { $t->send_raw($a{sock}, $raw) }
    else { $t->udp_send($raw, sock => $a{sock}) }
    my $d = $t->udp_recv($bs, 3);
    return $d ? parse_msg($d) : undef;
}

# The 200 (or $code) to a forwarded request, built from its Vias and headers.
sub answer_of {
    my ($m, $code, $body, @vias) = @_;
    @vias = $m->header_elems('via') unless @vias;
    $body //= '';
    return "SIP/2.0 $code Whatever\r\n" . join('', map { "Via: $_\r\n" } @vias)
        . "From: " . $m->header('from') . "\r\nTo: " . $m->header('to') . ";tag=t1\r\n"
        . "Call-ID: " . $m->header('call-id') . "\r\nCSeq: " . $m->header('cseq') . "\r\n"
        . "Contact: <sip:b\@127.0.0.1:9>\r\n"
        . ($body ne '' ? "Content-Type: text/plain\r\n" : '')
        . "Content-Length: " . length($body) . "\r\n\r\n$body";
}

{
    my ($bs, $bp) = hop();       # the next hop of the forwarded CANCEL
    my $as = $t->udp_socket;     # the CANCEL's sender
    my $fwd = stateless_cancel($bs, $bp, sock => $as);
    ok($fwd && $fwd->method eq 'CANCEL', 'foreign CANCEL without transaction: forwarded statelessly');
    my @v = $fwd ? $fwd->header_elems('via') : ();
    like($v[0] // '', qr/;branch=z9hG4bKmS[0-9a-f]+\.sl[0-9a-f]{16}\b/, '... with a signed stateless branch');
    my $body = "stray body\r\n";
    my $resp = $fwd ? answer_of($fwd, 200, $body) : '';
    $t->udp_send($resp, sock => $bs);
    my $got = parse_msg($t->udp_recv($as, 3));
    ok($got && $got->is_response && $got->code == 200, 'its 200, matching no transaction: forwarded to the next Via');
    if ($got) {
        is_deeply([ $got->header_elems('via') ], [ $v[1] ], 'forwarded response has one Via, the second one, unchanged');
        my $orig = parse_msg($resp);
        is($got->header($_), $orig->header($_), "forwarded response: $_ unchanged") for qw(from to call-id cseq contact);
        is($got->body, $body, 'forwarded response: body unchanged');
    }
    silent($bs, 0.3, 'stray response: nothing sent back to its sender');

    # rport/received in the next Via win over its sent-by (§18.2.2)
    my $cs = $t->udp_socket;
    $fwd = stateless_cancel($bs, $bp, sock => $cs, via => "SIP/2.0/UDP 192.0.2.1:9;branch=z9hG4bK" . rand_token(10) . ";rport");
    $t->udp_send(answer_of($fwd, 200), sock => $bs) if $fwd;
    my $g2 = parse_msg($t->udp_recv($cs, 3));
    ok($g2 && $g2->code == 200, 'stray response: sent to received/rport of the next Via');

    # next Via over TCP: the proxy connects there
    my $tp = free_port();
    my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $tp, Proto => 'tcp', Listen => 5,
                                  ReuseAddr => 1) or die "listen: $!";
    my $tc = $t->tcp_connect;
    $fwd = stateless_cancel($bs, $bp, sock => $tc, transport => 'TCP',
                            via => "SIP/2.0/TCP 127.0.0.1:$tp;branch=z9hG4bK" . rand_token(10));
    close $tc;
    $t->udp_send(answer_of($fwd, 200), sock => $bs) if $fwd;
    my $m3;
    if (IO::Select->new($l)->can_read(3)) {
        my $c = $l->accept;
        $c->autoflush(1);
        ${*$c}{siptest_buf} = '';
        $m3 = $t->read_response($c, 3);
    }
    ok($m3 && $m3->code == 200, 'stray response with a TCP next Via: delivered over TCP');
    ok($m3 && scalar($m3->header_elems('via')) == 1, '... with one Via') if $m3;

    # the signed branch with another next Via: dropped
    $fwd = stateless_cancel($bs, $bp, sock => $as);
    my ($vs, $vp) = hop();
    if ($fwd) {
        my @fv = $fwd->header_elems('via');
        (my $moved = $fv[1]) =~ s/127\.0\.0\.1:\d+/127.0.0.1:$vp/;
        $moved =~ s/;rport=\d+/;rport=$vp/;
        $t->udp_send(answer_of($fwd, 200, 'x', $fv[0], $moved), sock => $bs);
    }
    silent($vs, 1, 'our signed branch above another next Via: not forwarded there');
    silent($as, 0, '... nor to the original sender');

    # our address on top with a branch we never made: dropped
    my $forged = "SIP/2.0 180 Ringing\r\n"
        . "Via: SIP/2.0/UDP 127.0.0.1:$port;branch=z9hG4bKmSnotours" . rand_token(6) . ".1;rport\r\n"
        . "Via: SIP/2.0/UDP 127.0.0.1:$vp;branch=z9hG4bK" . rand_token(8) . "\r\n"
        . "From: <sip:a\@127.0.0.1>;tag=f1\r\nTo: <sip:b\@127.0.0.1>;tag=t1\r\n"
        . "Call-ID: " . cid('stray') . "\r\nCSeq: 7 INVITE\r\nContent-Length: 0\r\n\r\n";
    $t->udp_send($forged, sock => $as);
    silent($vs, 1, 'stray response with our Via forged on top: not forwarded to the second Via');
    (my $forged_sl = $forged) =~ s/branch=z9hG4bKmSnotours\w+\.1/branch=z9hG4bKmS0123456789abcdef.sl0123456789abcdef/;
    $t->udp_send($forged_sl, sock => $as);
    silent($vs, 1, '... nor with a stateless-looking branch whose signature is wrong');

    # top Via is not ours -> dropped
    my ($os, $op) = hop();
    (my $r4 = $forged) =~ s/^(Via: SIP\/2\.0\/UDP 127\.0\.0\.1:)$port;/$1$op;/m;
    $t->udp_send($r4, sock => $as);
    silent($vs, 1, 'stray response whose top Via is not the proxy\'s: not forwarded to the second Via');
    silent($os, 0, '... nor to the top Via');
    silent($as, 0, '... nor back to the sender');

    # only our Via -> nothing to forward to; the server keeps working
    (my $r5 = $forged) =~ s/^Via: SIP\/2\.0\/UDP 127\.0\.0\.1:\Q$vp\E;branch=\S+\r\n//m;
    $t->udp_send($r5, sock => $as);
    silent($as, 0.5, 'stray response with only the proxy\'s Via: dropped');
    ok($t->options_ok('udp'), 'server still answers after stray responses');
}

$t->dump_log_on_failure;
$t->stop;

# ---- SipProxyOutside Off: a foreign Request-URI gets 404, nothing is forwarded
my $t2 = SipTest->new();
{
    my $hp = free_port();
    my $hs = $t2->udp_socket(port => $hp);
    for my $m (qw(OPTIONS INVITE)) {
        my $s = $t2->udp_socket;
        my $raw = $t2->sip_request(method => $m, sock => $s, uri => "sip:bob\@127.0.0.1:$hp",
                                   call_id => cid("outside-off-$m"));
        my @r = $t2->udp_req($raw, 3, sock => $s);
        is(@r ? $r[-1]->code : 0, 404, "SipProxyOutside Off: $m for sip:bob\@127.0.0.1:<other port> gets 404")
            or diag('responses: ' . codes(@r));
        like(@r ? $r[-1]->reason : '', qr/^Domain Not Served Here$/i, '... "Domain Not Served Here"');
        $t2->udp_send($t2->ack_for($raw, $r[-1]), sock => $s) if $m eq 'INVITE' && @r;
    }
    my $c = $t2->tcp_connect or die "tcp: $!";
    my @r = $t2->transact('tcp', method => 'OPTIONS', sock => $c, uri => "sip:bob\@127.0.0.1:$hp;transport=tcp");
    is(@r ? $r[-1]->code : 0, 404, 'SipProxyOutside Off: OPTIONS over TCP for a foreign URI gets 404');
    silent($hs, 1, 'SipProxyOutside Off: no packet reached the other port');
}
$t2->dump_log_on_failure;
$t2->stop;

done_testing;
