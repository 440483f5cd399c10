#!/usr/bin/perl
# The location journal with several engines (SipEngines 2; docs/architecture.md
# "The journal with N engines"): both engines append to one journal and
# engine 0 compacts it (SipLocationCompact lowered to 10 lines here):
#   - many REGISTERs and re-REGISTERs from many UDP ports (so both
#     engines, and AoRs homed at both), some removed: the journal shrinks
#     once the compaction runs, and every binding is still there;
#   - more REGISTERs after the rewrite (appends still land);
#   - kill -9 of each engine, a graceful restart, and a full stop and
#     start (the journal alone) keep every binding and every removal.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use SipTest qw(rand_token wait_until);
use SipRegTest;

my $t = SipRegTest->new(
    server_conf => join("\n", 'SipEngines 2', 'SipLocationFile @DIR@/location.journal',
                        'SipLocationCompact 10', ''),
);
my $journal = $t->dir . '/location.journal';
my @pids = $t->engine_pids;
is(scalar(grep { $_ } @pids), 2, 'two engines run');

my (%want, %gone);     # user => contact; users registered then removed
my %cid;
sub reg {
    my ($user, $cseq, $expires) = @_;
    my $r = $t->register(user => $user, call_id => $cid{$user} //= rand_token(12) . '@j',
                         cseq => $cseq, expires => $expires, sock => $t->udp_socket,
                         contacts => [ "<$want{$user}>" ]);
    return $r && $r->code == 200;
}

# ---- 1. 60 users, each registered then refreshed 6 times; 10 removed
my ($ok, $n) = (0, 0);
for my $i (1 .. 60) {
    $want{"j$i"} = "sip:j$i\@127.0.0.1:" . (20000 + $i);
}
for my $round (1 .. 7) {
    for my $i (1 .. 60) {
        $n++;
        $ok++ if reg("j$i", $round, 600);
    }
}
for my $i (51 .. 60) {
    $n++;
    $ok++ if reg("j$i", 8, 0);
    $gone{"j$i"} = delete $want{"j$i"};
}
is($ok, $n, "$n REGISTERs (430 with 60 AoRs, both homes): 200 each");
# a TAB in a display name: escaped in the journal (version 3)
my $rt = $t->register(user => 'tabj', expires => 600,
                      contacts => [ "\"Tab\tName\" <sip:tabj\@127.0.0.1:7400>" ]);
is($rt && $rt->code, 200, 'a Contact with a TAB in its display name -> 200');
sub tab_kept {
    my ($when) = @_;
    my ($f) = $t->fetch('tabj');
    my ($c) = SipRegTest::contacts_of($f);
    like($c && $c->{raw} // '', qr/^"Tab\tName" <sip:tabj\@127\.0\.0\.1:7400>/,
         "$when: the TAB in the display name is kept") or diag(SipRegTest::dump_contacts($f));
}
my $lines = 0;
my $max = -s $journal;
ok($max > 0, "the journal grew to $max bytes");

# engine 0 compacts within a few sweeps (one a second)
my $small;
ok(wait_until(15, sub { $small = -s $journal; $small < $max / 3 }, 0.2),
   'the journal shrinks to under a third once compacted')
    or diag("journal $max -> " . ($small // '?') . " bytes");
sub journal_lines {
    open(my $fh, '<', $journal) or return -1;
    my @l = <$fh>;
    return scalar @l;
}
$lines = journal_lines();
ok($lines <= 80, "compacted journal: $lines lines for 51 bindings and 10 known AoRs");

sub check_all {
    my ($when) = @_;
    my ($have, $missing, $back) = (0, '', 0);
    for my $u (sort keys %want) {
        my ($r, %b) = $t->fetch($u);
        if ($r && $r->code == 200 && $b{ $want{$u} } && keys(%b) == 1) { $have++ }
        else { $missing .= " $u" }
    }
    for my $u (sort keys %gone) {
        my ($r, %b) = $t->fetch($u);
        $back++ if !$r || $r->code != 200 || keys %b;
    }
    is($have, scalar(keys %want), "$when: every binding (" . scalar(keys %want) . ") is there")
        or diag("missing:$missing");
    is($back, 0, "$when: no removed binding came back");
}
check_all('after compaction');

# ---- 2. appends after the rewrite
($ok, $n) = (0, 0);
for my $i (61 .. 80) {
    $want{"j$i"} = "sip:j$i\@127.0.0.1:" . (20000 + $i);
    $n++;
    $ok++ if reg("j$i", 1, 600);
}
is($ok, $n, '20 more REGISTERs after the rewrite: 200 each');
ok(journal_lines() > $lines, 'their lines are appended to the compacted journal');

# ---- 3. kill -9 each engine
for my $e (0, 1) {
    @pids = $t->engine_pids;
    kill 'KILL', $pids[$e];
    ok(wait_until(15, sub { my @p = $t->engine_pids; $p[$e] && $p[$e] != $pids[$e] }),
       "engine $e killed (-9) and restarted");
    sleep 1;
    check_all("after kill -9 of engine $e");
}

# ---- 4. another compaction by the restarted engine 0, then graceful
($ok, $n) = (0, 0);
for my $round (2 .. 14) {   # past 4 lines a binding (70 bindings)
    for my $i (61 .. 80) {
        $n++;
        $ok++ if reg("j$i", $round, 600);
    }
}
is($ok, $n, "$n more re-REGISTERs: 200 each");
$max = -s $journal;
ok(wait_until(15, sub { (-s $journal) < $max / 2 }, 0.2), 'the restarted engine 0 compacts again')
    or diag("journal $max -> " . (-s $journal) . " bytes");
@pids = $t->engine_pids;
$t->apachectl('graceful');
ok(wait_until(20, sub { my @p = $t->engine_pids; scalar(grep { $_ } @p) == 2
                        && !grep { my $x = $_; $x && grep { $_ && $_ == $x } @pids } @p }),
   'graceful restart: two new engines');
sleep 1;
check_all('after a graceful restart');
tab_kept('after a graceful restart');

# ---- 5. a full stop and start: the journal alone
$t->stop(quiet => 1);
ok(-s $journal, 'the journal is there after the stop');
$t->start;
check_all('after a stop and start');
tab_kept('after a stop and start');
my $log = $t->error_log;
unlike($log, qr/unreadable journal lines/, 'no unreadable journal line at any replay');

$t->dump_log_on_failure;
done_testing;
