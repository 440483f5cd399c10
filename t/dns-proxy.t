#!/usr/bin/perl
# The proxy's next hops resolved by RFC 3263 through the engine's
# asynchronous resolver, against the test DNS server (t/lib/SipDNS.pm):
# NAPTR transport selection, SRV priority and weight, failover (RFC 3263
# §4.3: 503, TCP refused, UDP timeout), TTL expiry, no records (404 and a
# log line), a silent DNS server (the INVITE fails cleanly while the
# engine keeps answering), a slow one under load, CANCEL while resolving.
use strict;
use warnings;
use Test::More;
use IO::Socket::INET;
use IO::Select;
use Time::HiRes qw(time sleep);
use SipTest qw(free_port parse_msg rand_token);
use SipDNS;

my %port = map { $_ => free_port() } qw(tcp1 tcp2 closed uA uB cA cB silent live wA wB ttl cancel load);
my $ZONE = <<"Z";
\$ORIGIN test.
test.                  60 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 30
tcponly.test.          60 IN NAPTR 10 50 "s" "SIP+D2T" "" _sip._tcp.tcponly.test.
_sip._tcp.tcponly.test. 60 IN SRV 10 10 $port{tcp1} tcp1.h.test.
_sip._udp.prio.test.   60 IN SRV 20 10 $port{uB} uB.h.test.
_sip._udp.prio.test.   60 IN SRV 10 10 $port{uA} uA.h.test.
_sip._udp.cfo.test.    60 IN SRV 10 10 $port{cA} cA.h.test.
_sip._udp.cfo.test.    60 IN SRV 20 10 $port{cB} cB.h.test.
_sip._tcp.fail.test.   60 IN SRV 10 10 $port{closed} closed.h.test.
_sip._tcp.fail.test.   60 IN SRV 20 10 $port{tcp2} tcp2.h.test.
_sip._udp.quiet.test.  60 IN SRV 10 10 $port{silent} silent.h.test.
_sip._udp.quiet.test.  60 IN SRV 20 10 $port{live} live.h.test.
_sip._udp.weight.test. 60 IN SRV 10 90 $port{wA} wA.h.test.
_sip._udp.weight.test. 60 IN SRV 10 10 $port{wB} wB.h.test.
ttl.test.              1 IN A 127.0.0.1
_sip._udp.cancel.test. 60 IN SRV 10 10 $port{cancel} cancel.h.test.
_sip._udp.load.test.   60 IN SRV 10 10 $port{load} load.h.test.
_sip._udp.silent.test. 60 IN SRV 10 10 $port{load} load.h.test.
Z
$ZONE .= "$_.h.test. 60 IN A 127.0.0.1\n" for sort keys %port;
my $dns = SipDNS->new(zone => $ZONE);
my $t = SipTest->new(vhost_conf => 'SipProxyOutside On',
                     server_conf => "SipDNSServer " . $dns->addr . "\nSipDNSTimeout 1\n"
                                  . "SipDNSTries 2\nSipTimerT1 50\n");
my $sport = $t->sip_port;

sub cid { return $_[0] . '-' . rand_token(10) . '@127.0.0.1' }
sub udp_hop { return $t->udp_socket(port => $port{ $_[0] }) }
sub tcp_hop {
    my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $port{ $_[0] },
                                  Proto => 'tcp', Listen => 5, ReuseAddr => 1)
        or die "listen $_[0]: $!";
    return $l;
}
sub answer_udp {
    my ($hop, $raw, $code, $reason) = @_;
    my $m = parse_msg($raw);
    my ($via) = $m->headers('via');
    my ($host, $p) = $via =~ m{SIP/2\.0/UDP ([^:;\s]+):(\d+)};
    my $dst = Socket::pack_sockaddr_in($p // $sport, Socket::inet_aton('127.0.0.1'));
    send($hop, SipTest::response_to($m, $code, $reason, tag => rand_token(6)), 0, $dst);
}
sub final_of { my @r = @_; return @r ? $r[-1]->code : 0 }
sub branch_of { my ($m) = @_; my ($v) = $m->headers('via'); return $v =~ /branch=([^;\s,]+)/ ? $1 : '' }

# ---- NAPTR picks the transport: a TCP-only domain is reached over TCP
{
    my $l = tcp_hop('tcp1');
    my $c = $t->udp_socket;
    my $raw = $t->sip_request(method => 'OPTIONS', sock => $c, uri => 'sip:bob@tcponly.test',
                              call_id => cid('naptr'));
    $t->udp_send($raw, sock => $c);
    my $conn = SipTest::accept_on($l, 5);
    ok($conn, 'NAPTR SIP+D2T: the proxy connected to the SRV target over TCP');
    my $m = $conn && $t->read_response($conn, 5);
    like($m ? $m->header('via') : '', qr{^SIP/2\.0/TCP }, 'NAPTR SIP+D2T: our Via says TCP');
    is($m && $m->uri, 'sip:bob@tcponly.test', 'the Request-URI is unchanged');
    $t->send_raw($conn, SipTest::response_to($m, 200, 'OK', tag => 'n1')) if $m;
    my $resp = parse_msg($t->udp_recv($c, 5) // 'x');
    is($resp->code, 200, 'NAPTR SIP+D2T: the 200 came back');
    is($dns->queries('tcponly.test', 'NAPTR'), 1, 'one NAPTR query');
}

# ---- SRV priority, then failover on 503 (RFC 3263 §4.3): a new branch to
#      the next target; the ACK for the 503 goes where the INVITE went
{
    my ($ha, $hb) = (udp_hop('uA'), udp_hop('uB'));
    my $c = $t->udp_socket;
    my $raw = $t->sip_request(method => 'INVITE', sock => $c, uri => 'sip:bob@prio.test',
                              call_id => cid('prio'));
    $t->udp_send($raw, sock => $c);
    my $a = $t->udp_new_request($ha, 5, 'INVITE');
    ok($a, 'SRV priority 10 target got the INVITE first');
    ok(!defined $t->udp_recv($hb, 0.3), '... and the priority 20 target nothing yet');
    my $ma = parse_msg($a // 'x');
    answer_udp($ha, $a, 503, 'Service Unavailable') if $a;
    my $ack = $t->udp_new_request($ha, 3, 'ACK');
    ok($ack, 'the ACK for the 503 went to the target the INVITE went to');
    is($ack && branch_of(parse_msg($ack)), branch_of($ma), '... in its transaction (same branch)');
    my $b = $t->udp_new_request($hb, 5, 'INVITE');
    ok($b, 'after the 503 the next SRV target got the INVITE');
    isnt($b && branch_of(parse_msg($b)), branch_of($ma), '... with a new branch id');
    answer_udp($hb, $b, 486, 'Busy Here') if $b;
    my @r;
    my $end = time + 5;
    while (time < $end) {
        my $d = $t->udp_recv($c, $end - time) // last;
        my $m = parse_msg($d);
        push @r, $m;
        last if $m->code >= 200;
    }
    is(final_of(@r), 486, 'the caller gets the last target\'s 486');
    $t->udp_send($t->ack_for($raw, $r[-1]), sock => $c) if @r;
}

# ---- a CANCEL after failover goes to the target the INVITE went to last
{
    my ($ha, $hb) = (udp_hop('cA'), udp_hop('cB'));
    my $c = $t->udp_socket;
    my $raw = $t->sip_request(method => 'INVITE', sock => $c, uri => 'sip:bob@cfo.test',
                              call_id => cid('cfo'));
    $t->udp_send($raw, sock => $c);
    my $a = $t->udp_new_request($ha, 5, 'INVITE');
    answer_udp($ha, $a, 503, 'Service Unavailable') if $a;
    my $b = $t->udp_new_request($hb, 5, 'INVITE');
    ok($b, 'CANCEL case: the INVITE failed over to the second target');
    answer_udp($hb, $b, 180, 'Ringing') if $b;
    my $ring;
    my $end = time + 3;
    while (!$ring && time < $end) {
        my $m = parse_msg($t->udp_recv($c, $end - time) // last);
        $ring = $m if $m->code == 180;
    }
    ok($ring, '... its 180 reached the caller');
    (my $cancel = $raw) =~ s/^INVITE /CANCEL /;
    $cancel =~ s/^CSeq: (\d+) INVITE/CSeq: $1 CANCEL/m;
    $t->udp_send($cancel, sock => $c);
    my $cb = $t->udp_new_request($hb, 3, 'CANCEL');
    ok($cb, 'the CANCEL went to the second target');
    is($cb && branch_of(parse_msg($cb)), $b && branch_of(parse_msg($b)),
       '... in the INVITE\'s transaction there (same branch)');
    ok(!defined $t->udp_new_request($ha, 0.5, 'CANCEL'), '... and not to the first one');
    if ($cb) {
        answer_udp($hb, $cb, 200, 'OK');
        answer_udp($hb, $b, 487, 'Request Terminated');
    }
    my $fin;
    $end = time + 3;
    while (!$fin && time < $end) {
        my $m = parse_msg($t->udp_recv($c, $end - time) // last);
        $fin = $m if $m->code >= 200 && ($m->header('cseq') // '') =~ /INVITE/;
    }
    is($fin && $fin->code, 487, 'the caller gets the 487');
    $t->udp_send($t->ack_for($raw, $fin), sock => $c) if $fin;
}

# ---- failover when the first target refuses the TCP connection
{
    my $l = tcp_hop('tcp2');
    my $c = $t->udp_socket;
    my $mark = $t->log_mark;
    my $raw = $t->sip_request(method => 'OPTIONS', sock => $c,
                              uri => 'sip:bob@fail.test;transport=tcp', call_id => cid('refused'));
    my $t0 = time;
    $t->udp_send($raw, sock => $c);
    my $conn = SipTest::accept_on($l, 5);
    ok($conn, 'TCP refused by the first SRV target: the second one got a connection');
    my $m = $conn && $t->read_response($conn, 5);
    ok($m && $m->method eq 'OPTIONS', '... and the OPTIONS');
    $t->send_raw($conn, SipTest::response_to($m, 200, 'OK', tag => 'f1')) if $m;
    my $resp = parse_msg($t->udp_recv($c, 5) // 'x');
    is($resp->code, 200, 'TCP refused: the 200 from the second target came back');
    ok(time - $t0 < 3, sprintf('TCP refused: failover at once (%.2f s)', time - $t0));
    like($t->log_since($mark), qr/sip proxy: sip:bob\@fail\.test;transport=tcp at 127\.0\.0\.1: 503 \(local\); trying 127\.0\.0\.1:$port{tcp2}/,
         'the failover is logged');
}

# ---- failover on a UDP timeout (timer F = 64*T1, SipTimerT1 50 ms)
{
    my ($hs, $hl) = (udp_hop('silent'), udp_hop('live'));
    my $c = $t->udp_socket;
    my $raw = $t->sip_request(method => 'OPTIONS', sock => $c, uri => 'sip:bob@quiet.test',
                              call_id => cid('timeout'));
    my $t0 = time;
    $t->udp_send($raw, sock => $c);
    ok($t->udp_new_request($hs, 3, 'OPTIONS'), 'UDP timeout: the first target got the OPTIONS');
    my $b = $t->udp_new_request($hl, 8, 'OPTIONS');
    my $dt = time - $t0;
    ok($b, sprintf('UDP timeout: the second target got it after %.2f s', $dt));
    ok($dt >= 2.5 && $dt < 6, 'UDP timeout: ... after timer F (3.2 s), not before');
    answer_udp($hl, $b, 200, 'OK') if $b;
    my $resp;
    my $end = time + 3;
    while (time < $end) {
        $resp = parse_msg($t->udp_recv($c, $end - time) // last);
        last if $resp->code >= 200;
    }
    is($resp && $resp->code, 200, 'UDP timeout: the caller gets the second target\'s 200');
}

# ---- SRV weight: 90/10 at the same priority, roughly proportional
{
    my ($wa, $wb) = (udp_hop('wA'), udp_hop('wB'));
    my $c = $t->udp_socket;
    my %n = (A => 0, B => 0);
    my $sel = IO::Select->new($wa, $wb);
    for my $i (1 .. 100) {
        my $raw = $t->sip_request(method => 'OPTIONS', sock => $c, uri => "sip:u$i\@weight.test",
                                  call_id => cid("w$i"));
        $t->udp_send($raw, sock => $c);
        my ($s) = $sel->can_read(3) or last;
        recv($s, my $d, 70000, 0);
        $n{ $s == $wa ? 'A' : 'B' }++;
        answer_udp($s, $d, 200, 'OK');
        my $resp = parse_msg($t->udp_recv($c, 3) // 'x');
        last unless $resp->code == 200;
    }
    is($n{A} + $n{B}, 100, 'weights: 100 requests forwarded and answered');
    ok($n{A} >= 75 && $n{B} >= 2, "weights 90/10: $n{A} to the first, $n{B} to the second");
}

# ---- TTL: an answer is reused while fresh, asked again once it expired
{
    my $h = udp_hop('ttl');
    my $c = $t->udp_socket;
    $dns->clear_log;
    for my $round (1 .. 3) {
        sleep 2.2 if $round == 3;
        my $raw = $t->sip_request(method => 'OPTIONS', sock => $c,
                                  uri => "sip:bob\@ttl.test:$port{ttl}", call_id => cid("ttl$round"));
        $t->udp_send($raw, sock => $c);
        my $d = $t->udp_new_request($h, 3, 'OPTIONS');
        answer_udp($h, $d, 200, 'OK') if $d;
        is(parse_msg($t->udp_recv($c, 3) // 'x')->code, 200, "TTL round $round: answered");
        is($dns->queries('ttl.test', 'A'), $round < 3 ? 1 : 2,
           $round < 3 ? "TTL round $round: from the cache (one A query)"
                      : 'TTL expired: asked again (two A queries)');
    }
}

# ---- no record: 404 (RFC 3263 §4 leaves nothing to try) and one log line
{
    my $mark = $t->log_mark;
    my @r = $t->udp_req($t->sip_request(method => 'OPTIONS', uri => 'sip:bob@nowhere.test',
                                        call_id => cid('nx')), 5);
    is(final_of(@r), 404, 'a name with no record: 404');
    my $log = $t->log_since($mark);
    my @lines = grep { /cannot resolve sip:bob\@nowhere\.test/ } split /\n/, $log;
    is(scalar @lines, 1, 'one log line says why') or diag($log);
    like($lines[0] // '', qr/\[sip:notice\].*no such name or no usable record.*404 Not Found/,
         '... a notice naming the cause and the answer');
}

# ---- CANCEL while resolving (RFC 3261 §9.1): nothing is sent, a 487 answers
{
    my $h = udp_hop('cancel');
    $dns->set_mode('silent');
    my $c = $t->udp_socket;
    my $raw = $t->sip_request(method => 'INVITE', sock => $c, uri => 'sip:bob@cancel.test',
                              call_id => cid('cancel'));
    $t->udp_send($raw, sock => $c);
    my $trying = parse_msg($t->udp_recv($c, 3) // 'x');
    is($trying->code, 100, 'INVITE to a name being resolved: 100 Trying');
    (my $cancel = $raw) =~ s/^INVITE /CANCEL /;
    $cancel =~ s/^CSeq: (\d+) INVITE/CSeq: $1 CANCEL/m;
    my $t0 = time;
    $t->udp_send($cancel, sock => $c);
    my %got;
    my $end = time + 3;
    while (time < $end && keys %got < 2) {
        my $m = parse_msg($t->udp_recv($c, $end - time) // last);
        $got{ $m->header('cseq') =~ /CANCEL/ ? 'cancel' : 'invite' } = $m->code if $m->code >= 200;
    }
    is($got{cancel}, 200, 'the CANCEL: 200');
    is($got{invite}, 487, 'the INVITE: 487 Request Terminated');
    ok(time - $t0 < 1.5, sprintf('... at once (%.2f s)', time - $t0));
    $dns->set_mode('normal');
    ok(!defined $t->udp_recv($h, 2.5), 'nothing reached the target (the query was cancelled)');
    $t->udp_send($t->ack_for($raw, parse_msg("SIP/2.0 487 x\r\nTo: <sip:bob\@cancel.test>;tag=x\r\n\r\n")),
                 sock => $c);
}

# ---- a silent DNS server: the INVITE waits, then fails cleanly (408),
#      while the engine keeps answering other requests at once
{
    $dns->set_mode('silent');
    my $c = $t->udp_socket;
    my $raw = $t->sip_request(method => 'INVITE', sock => $c, uri => 'sip:bob@silent.test',
                              call_id => cid('silent'));
    my $mark = $t->log_mark;
    my $t0 = time;
    $t->udp_send($raw, sock => $c);
    my ($worst, $n) = (0, 0);
    my $final;
    while (time - $t0 < 10 && !$final) {
        my $s0 = time;
        my @o = $t->udp_req($t->sip_request(method => 'OPTIONS', uri => "sip:nobody\@127.0.0.1:$sport",
                                            call_id => cid('ping')), 2, sock => $t->udp_socket);
        my $dt = time - $s0;
        $worst = $dt if $dt > $worst;
        $n++ if final_of(@o) == 200;
        while (defined(my $d = $t->udp_recv($c, 0.1))) {
            my $m = parse_msg($d);
            $final = $m if $m->code >= 200;
        }
    }
    my $dt = time - $t0;
    ok($n >= 5, "OPTIONS answered while the DNS server is silent ($n)");
    ok($worst < 0.5, sprintf('... each within 0.5 s (worst %.3f s)', $worst));
    is($final && $final->code, 408, sprintf('the INVITE fails with 408 after %.2f s', $dt));
    ok($dt >= 0.9, '... once the DNS timeout ran out (SipDNSTimeout 1, 2 tries)');
    like($t->log_since($mark), qr/cannot resolve sip:bob\@silent\.test.*no DNS answer.*408/,
         'the timeout is logged');
    $t->udp_send($t->ack_for($raw, $final), sock => $c) if $final;
    $dns->set_mode('normal');
}

# ---- a slow resolver under load: many calls to one name all complete
{
    my $h = udp_hop('load');
    $dns->set_mode('slow', 1);
    my $c = $t->udp_socket;
    my $N = 40;
    my $t0 = time;
    for my $i (1 .. $N) {
        $t->udp_send($t->sip_request(method => 'OPTIONS', sock => $c, uri => "sip:u$i\@load.test",
                                     call_id => cid("load$i")), sock => $c);
    }
    my ($fwd, $ok) = (0, 0);
    my %seen;
    my $sel = IO::Select->new($h, $c);
    my $end = time + 10;
    while (time < $end && $ok < $N) {
        for my $s ($sel->can_read($end - time)) {
            recv($s, my $d, 70000, 0);
            my $m = parse_msg($d);
            if ($s == $h) {
                next if $m->is_response || $seen{ $m->header('call-id') }++;
                $fwd++;
                answer_udp($h, $d, 200, 'OK');
            }
            elsif ($m->code == 200) {
                $ok++;
            }
        }
    }
    is($fwd, $N, "slow DNS (1 s): all $N requests to one name forwarded");
    is($ok, $N, sprintf('... and all answered 200 (%.2f s)', time - $t0));
    ok($dns->queries('_sip._udp.load.test', 'SRV') <= 2, 'one lookup shared by the concurrent calls');
    $dns->set_mode('normal');
}

ok($t->options_ok('udp'), 'the server still answers');
is($t->crash_lines, 0, 'no crash in the error log');
$dns->stop;
done_testing;
