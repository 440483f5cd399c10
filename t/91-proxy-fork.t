#!/usr/bin/perl
# Forking proxy (RFC 3261 §16.7, §16.8): a SIP-CGI script prints two
# CGI-PROXY-REQUEST lines and exits; mod_sip proxies the INVITE to two SIPp
# UASs in parallel and picks the response for the SIPp UAC.  Also Timer C
# (SipProxyTimerC) on a branch that never answers (408) and on one that rings
# forever.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use SipTest qw(free_port);

SipTest::sipp_available() or do { done_testing; exit 1 };

# The fork script: one CGI-PROXY-REQUEST per target URI.
sub set_targets {
    my ($t, @uris) = @_;
    my $out = join '', map { "CGI-PROXY-REQUEST $_ SIP/2.0\\n\\n" } @uris;
    $t->write_script('fork@127.0.0.1', text => "#!/bin/sh\nprintf '$out'\n");
}

sub uas {
    my ($t, $name, $kind, %o) = @_;
    my %sf = (ok => 'proxy-uas-call.xml', 486 => 'proxy-uas-486.xml', 603 => 'proxy-uas-603.xml',
              ring => 'proxy-uas-ring-cancel.xml', silent => 'proxy-uas-silent.xml');
    return $t->sipp_start(name => $name, sf => $sf{$kind}, m => 1, d => $o{d} // 0);
}

sub uac {
    my ($t, $name, $sf) = @_;
    return $t->sipp_start(name => $name, sf => $sf, m => 1, service => 'fork',
                          remote => '127.0.0.1:' . $t->sip_port, keys => { uri_params => '' });
}

sub target { my ($h) = @_; return "sip:$h->{name}\@127.0.0.1:$h->{port}" }

# Final response codes to the INVITE seen by the UAC (distinct, in order).
sub uac_finals {
    my ($uac) = @_;
    my (@c, %seen);
    for my $r (SipTest::sipp_msgs($uac, dir => 'received', cseq_method => 'INVITE')) {
        push @c, $r->code if $r->code >= 200 && !$seen{ $r->code }++;
    }
    return @c;
}

# The INVITE (first) and the requests of a method received by a UAS.
sub got { my ($h, $m) = @_; return SipTest::sipp_msgs($h, dir => 'received', method => $m) }

# A hop-by-hop ACK for a non-2xx from the proxy: one Via, the proxy's, with
# the branch of the INVITE the proxy sent; same Request-URI; CSeq n ACK.
sub check_hop_ack {
    my ($t, $label, $uas) = @_;
    my ($inv) = got($uas, 'INVITE');
    my @acks = got($uas, 'ACK');
    ok(@acks >= 1, "$label: UAS got an ACK") or return;
    my $ack = $acks[0];
    my @via = $ack->header_elems('via');
    my ($iv) = $inv->header_elems('via');
    my $port = $t->sip_port;
    ok(@via == 1 && $via[0] =~ m{^SIP/2\.0/UDP 127\.0\.0\.1:$port;}, "$label: ACK has one Via, the proxy's")
        or diag($ack->head);
    is(SipTest::Msg::params_of($via[0])->{branch}, SipTest::Msg::params_of($iv)->{branch},
       "$label: ACK has the branch of the proxied INVITE (same transaction)");
    is($ack->uri, $inv->uri, "$label: ACK Request-URI is the INVITE's");
    my ($n) = ($inv->header('cseq') // '') =~ /^(\d+)/;
    like($ack->header('cseq') // '', qr/^\Q$n\E\s+ACK$/, "$label: ACK CSeq number is the INVITE's");
}

my $t = SipTest->new(scripts => { 'fork@127.0.0.1' => "#!/bin/sh\nexit 0\n" });
my $port = $t->sip_port;

# ---- 486 (at once) and 200 (after 180, 500 ms): the call completes via the 200 UAS
{
    my $busy = uas($t, 'busy1', '486');
    my $ans  = uas($t, 'answer1', 'ok', d => 500);
    set_targets($t, target($busy), target($ans));
    my $uac = uac($t, 'uac-486-200', 'proxy-uac-call.xml');
    $t->sipp_ok($uac, calls => 1);
    $t->sipp_ok($ans, calls => 1);
    $t->sipp_ok($busy, calls => 1);
    my @inv_b = got($busy, 'INVITE');
    my @inv_a = got($ans, 'INVITE');
    ok(@inv_b && @inv_a, '486+200: both UASs got the INVITE');
    is($inv_b[0] && $inv_b[0]->uri, target($busy), '486+200: Request-URI of branch 1 is its CGI-PROXY-REQUEST target');
    is($inv_a[0] && $inv_a[0]->uri, target($ans), '486+200: Request-URI of branch 2 is its CGI-PROXY-REQUEST target');
    my @vb = $inv_b[0] ? $inv_b[0]->header_elems('via') : ();
    my @va = $inv_a[0] ? $inv_a[0]->header_elems('via') : ();
    isnt(SipTest::Msg::params_of($vb[0])->{branch}, SipTest::Msg::params_of($va[0])->{branch},
         '486+200: the two branches have different branch parameters');
    is_deeply([uac_finals($uac)], [200], '486+200: UAC got 200 and no other final response');
    my @acks = got($ans, 'ACK');
    my @byes = got($ans, 'BYE');
    ok(@acks && @byes, '486+200: ACK and BYE reached the 200 UAS');
    ok(!grep({ my @v = $_->header_elems('via'); !(@v == 2 && $v[0] =~ m{^SIP/2\.0/UDP 127\.0\.0\.1:$port;}
                                                  && $v[1] =~ m{127\.0\.0\.1:$uac->{port}}) } @acks, @byes),
       '486+200: ACK and BYE at the 200 UAS came through the proxy from the UAC')
        or diag(join "\n--\n", map { $_->head } @acks, @byes);
    check_hop_ack($t, '486+200: busy UAS', $busy);
    is(scalar(got($busy, 'CANCEL')), 0, '486+200: busy UAS got no CANCEL');
}

# ---- both 486: UAC gets 486
{
    my $b1 = uas($t, 'busy2a', '486');
    my $b2 = uas($t, 'busy2b', '486', d => 200);
    set_targets($t, target($b1), target($b2));
    my $uac = uac($t, 'uac-486-486', 'proxy-uac-reject.xml');
    $t->sipp_ok($uac, calls => 1);
    $t->sipp_ok($_, calls => 1) for $b1, $b2;
    is_deeply([uac_finals($uac)], [486], '486+486: UAC got 486');
    my ($fin) = SipTest::sipp_msgs($uac, dir => 'received', code => 486);
    my @v = $fin ? $fin->header_elems('via') : ();
    ok(@v == 1 && $v[0] =~ /:$uac->{port};/, '486+486: the 486 at the UAC has only the UAC Via') or diag(join "\n", @v);
    check_hop_ack($t, "486+486: UAS $_->{name}", $_) for $b1, $b2;
}

# ---- 486 at once, 603 after 300 ms: 6xx wins
{
    my $b = uas($t, 'busy3', '486');
    my $d = uas($t, 'decline3', '603', d => 300);
    set_targets($t, target($b), target($d));
    my $uac = uac($t, 'uac-486-603', 'proxy-uac-reject.xml');
    $t->sipp_ok($uac, calls => 1);
    $t->sipp_ok($_, calls => 1) for $b, $d;
    is_deeply([uac_finals($uac)], [603], '486+603: UAC got 603 (6xx before 4xx)');
    check_hop_ack($t, "486+603: UAS $_->{name}", $_) for $b, $d;
}

# ---- one rings (180), the other declines after 300 ms: the ringing branch is
#      cancelled, the UAC gets 603
{
    my $r = uas($t, 'ring4', 'ring');
    my $d = uas($t, 'decline4', '603', d => 300);
    set_targets($t, target($r), target($d));
    my $uac = uac($t, 'uac-ring-603', 'proxy-uac-reject.xml');
    $t->sipp_ok($uac, calls => 1);
    $t->sipp_ok($_, calls => 1) for $r, $d;
    is_deeply([uac_finals($uac)], [603], 'ring+603: UAC got 603, not the 487 of the cancelled branch');
    my @c = got($r, 'CANCEL');
    ok(@c >= 1, 'ring+603: ringing UAS got a CANCEL after the 603');
    if (@c) {
        my ($inv) = got($r, 'INVITE');
        my @cv = $c[0]->header_elems('via');
        my ($iv) = $inv->header_elems('via');
        ok(@cv == 1 && SipTest::Msg::params_of($cv[0])->{branch} eq SipTest::Msg::params_of($iv)->{branch},
           'ring+603: CANCEL has one Via with the branch of the INVITE it cancels') or diag($c[0]->head);
        is($c[0]->uri, $inv->uri, 'ring+603: CANCEL Request-URI is the INVITE\'s');
        like($c[0]->header('cseq') // '', qr/^1\s+CANCEL$/, 'ring+603: CANCEL CSeq 1 CANCEL');
    }
    check_hop_ack($t, 'ring+603: ringing UAS (ACK for its 487)', $r);
    check_hop_ack($t, 'ring+603: declining UAS', $d);
    my @p = grep { $_->code == 180 } SipTest::sipp_msgs($uac, dir => 'received');
    ok(@p, 'ring+603: UAC got the 180 of the ringing branch');
}
$t->dump_log_on_failure;
$t->stop;

# ---- Timer C: SipProxyTimerC 2
my $t2 = SipTest->new(scripts => { 'fork@127.0.0.1' => "#!/bin/sh\nexit 0\n" },
                      vhost_conf => 'SipProxyTimerC 2');

# one branch never answers (no provisional): after Timer C it counts as 408;
# the other answers 486 -> the UAC gets 486 or 408, soon after Timer C.
{
    my $s = uas($t2, 'silent5', 'silent', d => 4000);
    my $b = uas($t2, 'busy5', '486');
    set_targets($t2, target($s), target($b));
    my $t0 = time;
    my $uac = uac($t2, 'uac-silent-486', 'proxy-uac-reject.xml');
    $t2->sipp_ok($uac, calls => 1, timeout => 45);
    my $el = time - $t0;
    my @f = uac_finals($uac);
    ok(@f == 1 && ($f[0] == 486 || $f[0] == 408), 'silent+486: UAC got 486 or 408')
        or diag("finals: @f");
    my ($e) = grep { $_->{msg}->code >= 200 } SipTest::sipp_msgs($uac, dir => 'received', full => 1,
                                                                   cseq_method => 'INVITE');
    my ($sent) = SipTest::sipp_msgs($uac, dir => 'sent', full => 1, method => 'INVITE');
    my $dt = $e && $sent ? $e->{time} - $sent->{time} : 999;
    cmp_ok($dt, '<', 40, 'silent+486: final response within 40 s');
    cmp_ok($dt, '>=', 1.5, 'silent+486: final response not before Timer C (2 s) ended the silent branch');
    cmp_ok($dt, '<', 10, 'silent+486: final response soon after Timer C (2 s), not after Timer B (32 s)');
    note(sprintf 'silent+486: final after %.2fs', $dt);
    $t2->sipp_ok($b, calls => 1);
    $t2->sipp_ok($s, calls => 1);
    is(scalar(got($s, 'CANCEL')), 0, 'silent+486: no CANCEL sent to a branch without a provisional response');
    my @inv = got($s, 'INVITE');
    ok(@inv >= 1, 'silent+486: silent UAS got the INVITE (' . scalar(@inv) . ' copies)');
}

# the only branch never answers: it ends as 408 when Timer C fires
{
    my $s = uas($t2, 'silent8', 'silent', d => 4000);
    set_targets($t2, target($s));
    my $uac = uac($t2, 'uac-silent', 'proxy-uac-reject.xml');
    $t2->sipp_ok($uac, calls => 1, timeout => 45);
    is_deeply([uac_finals($uac)], [408], 'silent only: UAC got 408 Request Timeout');
    my ($e) = grep { $_->{msg}->code >= 200 } SipTest::sipp_msgs($uac, dir => 'received', full => 1,
                                                                   cseq_method => 'INVITE');
    my ($sent) = SipTest::sipp_msgs($uac, dir => 'sent', full => 1, method => 'INVITE');
    my $dt = $e && $sent ? $e->{time} - $sent->{time} : 999;
    ok($dt >= 1.5 && $dt < 10, sprintf('silent only: 408 after Timer C, %.2fs after the INVITE', $dt));
    $t2->sipp_ok($s, calls => 1);
    is(scalar(got($s, 'CANCEL')), 0, 'silent only: no CANCEL sent to the silent branch');
}

# one UAS rings forever: Timer C (2 s after the 180) cancels it, the UAC gets 487
{
    my $r = uas($t2, 'ring6', 'ring');
    set_targets($t2, target($r));
    my $uac = uac($t2, 'uac-ring-timerc', 'proxy-uac-reject.xml');
    $t2->sipp_ok($uac, calls => 1, timeout => 45);
    $t2->sipp_ok($r, calls => 1);
    check_ring_timer_c($t2, 'timer C 2', $uac, $r, 1.8, 4);
}
$t2->dump_log_on_failure;
$t2->stop;

# ---- the same with SipProxyTimerC 1500ms
my $t3 = SipTest->new(scripts => { 'fork@127.0.0.1' => "#!/bin/sh\nexit 0\n" },
                      vhost_conf => 'SipProxyTimerC 1500ms');
{
    my $r = uas($t3, 'ring7', 'ring');
    set_targets($t3, target($r));
    my $uac = uac($t3, 'uac-ring-timerc-ms', 'proxy-uac-reject.xml');
    $t3->sipp_ok($uac, calls => 1, timeout => 45);
    $t3->sipp_ok($r, calls => 1);
    check_ring_timer_c($t3, 'timer C 1500ms', $uac, $r, 1.3, 3);
}
$t3->dump_log_on_failure;
$t3->stop;

sub check_ring_timer_c {
    my ($t, $label, $uac, $r, $min, $max) = @_;
    my ($ring) = SipTest::sipp_msgs($r, dir => 'sent', code => 180, full => 1);
    my ($can)  = SipTest::sipp_msgs($r, dir => 'received', method => 'CANCEL', full => 1);
    ok($can, "$label: ringing UAS got a CANCEL");
    if ($ring && $can) {
        my $dt = $can->{time} - $ring->{time};
        ok($dt >= $min && $dt <= $max, sprintf("$label: CANCEL %.2fs after the 180 (expected %.1f..%.1f s)", $dt, $min, $max));
    } else {
        fail("$label: CANCEL timing");
    }
    is_deeply([uac_finals($uac)], [487], "$label: UAC got 487");
    ok(scalar(grep { $_->code == 180 } SipTest::sipp_msgs($uac, dir => 'received')), "$label: UAC got the 180");
    check_hop_ack($t, "$label: ringing UAS (ACK for its 487)", $r);
}

done_testing;
