#!/usr/bin/perl
# Lost packets through the stateful proxy (UDP): the SIPp UAC drops 50 % of
# its INVITE transmissions and the SIPp UAS 30 % of its 180 and 200
# transmissions (scenario attribute lost=).  Retransmissions -- the UAC's
# INVITE absorbed by the proxy's server transaction, the proxy's own INVITE
# retransmissions (Timer A) towards the UAS, the UAS's 200 relayed by the
# proxy -- must get all 5 calls through.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use SipTest qw(free_port);

SipTest::sipp_available() or do { done_testing; exit 1 };

my $t = SipTest->new(vhost_conf => 'SipProxyOutside On');
my $port = $t->sip_port;
my $t0 = time;

# SIPp seeds its loss generator from the clock, so a round may by chance
# drop nothing; repeat (at most 3 rounds) until something was dropped.
my ($lost_uac, $lost_uas, $round) = (0, 0, 0);
while ($round < 3 && $lost_uac + $lost_uas == 0) {
    $round++;
    my $uas = $t->sipp_start(name => "lossy-uas$round", sf => 'proxy-uas-lossy.xml', m => 5, d => 100,
                             args => ['-max_retrans', 8, '-max_invite_retrans', 8, '-max_non_invite_retrans', 8]);
    my $uac = $t->sipp_start(name => "lossy-uac$round", sf => 'proxy-uac-lossy.xml', m => 5, r => 5,
                             service => 'bob', remote => "127.0.0.1:$uas->{port}", rsa => "127.0.0.1:$port",
                             keys => { uri_params => '' });
    my $r0 = time;
    $t->sipp_ok($uac, calls => 5, label => "round $round: lossy UAC");
    $t->sipp_ok($uas, calls => 5, label => "round $round: lossy UAS");
    my ($lc, $ls) = (SipTest::sipp_lost_count($uac), SipTest::sipp_lost_count($uas));
    $lost_uac += $lc;
    $lost_uas += $ls;
    note(sprintf 'round %d: %.1fs, UAC dropped %d INVITEs, UAS dropped %d 180/200s', $round, time - $r0, $lc, $ls);

    # every call made it through the proxy in both directions
    my %inv = map { ($_->header('call-id') // '') => 1 } SipTest::sipp_msgs($uas, dir => 'received', method => 'INVITE');
    my %ok  = map { ($_->header('call-id') // '') => 1 }
        grep { $_->code == 200 && ($_->header('cseq') // '') =~ /INVITE/ } SipTest::sipp_msgs($uac, dir => 'received');
    my %bye = map { ($_->header('call-id') // '') => 1 } SipTest::sipp_msgs($uas, dir => 'received', method => 'BYE');
    is(scalar(keys %inv), 5, "round $round: INVITEs of 5 calls reached the UAS");
    is(scalar(keys %ok), 5, "round $round: 200s of 5 calls reached the UAC");
    is(scalar(keys %bye), 5, "round $round: BYEs of 5 calls reached the UAS");
    my @bad = grep { my @v = $_->header_elems('via'); @v != 1 } grep { $_->is_response } SipTest::sipp_msgs($uac, dir => 'received');
    ok(!@bad, "round $round: every response at the UAC has exactly one Via") or diag(join "\n--\n", map { $_->head } @bad);
    # the UAC's INVITE retransmissions never reach the UAS as new requests:
    # every INVITE at the UAS carries the proxy's branch of its call
    my %br;
    for my $m (SipTest::sipp_msgs($uas, dir => 'received', method => 'INVITE')) {
        my ($v) = $m->header_elems('via');
        $br{ $m->header('call-id') }{ SipTest::Msg::params_of($v)->{branch} // '' } = 1;
    }
    ok(!grep({ keys %{ $br{$_} } != 1 } keys %br),
       "round $round: one proxy branch per call towards the UAS (UAC retransmissions absorbed)")
        or diag(explain \%br);
}
ok($lost_uac + $lost_uas > 0, "SIPp dropped messages ($lost_uac INVITEs, $lost_uas 180/200s in $round round(s))");
my $el = time - $t0;
cmp_ok($el, '<', 60, sprintf('lossy calls done in under a minute (%.1fs)', $el));
ok($t->options_ok('udp'), 'server still answers');
$t->dump_log_on_failure;
$t->stop;
done_testing;
