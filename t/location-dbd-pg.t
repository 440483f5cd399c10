#!/usr/bin/perl
# SipLocation dbd on PostgreSQL, two nodes (issue 19 point 2): group
# commit, the cache in front of the database and LISTEN/NOTIFY between the
# nodes.
#   * a REGISTER acknowledged on A is routable on B within $BOUND seconds,
#     though B had the AoR cached as unknown; an unregister likewise;
#   * B answers from its cache (a row changed behind its back is not seen)
#     until a note for the AoR arrives;
#   * 200 REGISTERs sent at once are all answered 200 and all stored, in
#     fewer transactions than REGISTERs, and (the table grown without
#     statistics) without a sequential scan of it;
#   * the database connections killed mid-run: every REGISTER is answered
#     (200, or 500 while the connection is gone), then all is well again,
#     the listening connection too.
# The SQLite store is covered by t/reg-dbd.t (no notes there).
use strict;
use warnings;
use Test::More;
use IO::Select;
use Time::HiRes qw(sleep time);
use SipTest qw(wait_until rand_token);
use SipRegTest;

my $MODDIR = '/usr/lib/apache2/modules';
ok(-e "$MODDIR/mod_dbd.so", 'mod_dbd is installed') or BAIL_OUT('mod_dbd missing');
my $BOUND = 0.2;    # seconds from A's 200 to B routing by it

my $pg = SipRegTest::postgres_start();
sub conf {
    return "LoadModule dbd_module $MODDIR/mod_dbd.so\nDBDriver pgsql\nDBDParams \"$pg->{params}\"\n"
         . "SipLocation dbd\n" . join('', map { "$_\n" } @_);
}
my $na = SipRegTest->new(server_conf => conf());
my $nb = SipRegTest->new(server_conf => conf(), vhost_conf => 'SipMode redirect');
ok($nb->wait_log(0, qr/kept in the mod_dbd database/, 10), 'node B uses the database store');

# B routes $user to $contact (302 naming it), or answers $code
sub b_answer {
    my ($user) = @_;
    my $m = $nb->request_to($user, method => 'INVITE', timeout => 2);
    return 'none' unless $m;
    return $m->code . ' ' . ($m->header('contact') // '');
}

# Seconds until B's answer for $user matches $re (polling), or undef after 3 s
sub time_until_b {
    my ($user, $re, $t0) = @_;
    while (time - $t0 < 3) {
        return time - $t0 if b_answer($user) =~ $re;
        sleep 0.005;
    }
    return undef;
}

# ------------------------------------------------------------ A -> B
my (@seen, @gone);
for my $i (1 .. 10) {
    my $u = "vis$i";
    like(b_answer($u), qr/^404/, "$u: B does not know it yet (and caches that)") if $i <= 2;
    b_answer($u);
    my $r = $na->register(user => $u, contacts => [ "<sip:$u\@127.0.0.1:5071>" ], expires => 600);
    my $t0 = time;
    is($r && $r->code, 200, "$u: REGISTER on A -> 200") or next;
    push @seen, time_until_b($u, qr{^302 <sip:\Q$u\E\@127\.0\.0\.1:5071>}, $t0) // 99;
    $r = $na->register(user => $u, contacts => [ "<sip:$u\@127.0.0.1:5071>" ], expires => 0);
    $t0 = time;
    is($r && $r->code, 200, "$u: unregister on A -> 200") or next;
    push @gone, time_until_b($u, qr/^480/, $t0) // 99;
}
my ($max_seen) = sort { $b <=> $a } @seen;
my ($max_gone) = sort { $b <=> $a } @gone;
cmp_ok($max_seen, '<=', $BOUND, sprintf('a REGISTER on A is routable on B within %.0f ms (worst of %d: %.1f ms)',
                                        $BOUND * 1000, scalar @seen, $max_seen * 1000));
cmp_ok($max_gone, '<=', $BOUND, sprintf('an unregister on A is seen on B within %.0f ms (worst of %d: %.1f ms)',
                                        $BOUND * 1000, scalar @gone, $max_gone * 1000));

# ------------------------------------------------------------ B's cache
{
    my $r = $na->register(user => 'cached', contacts => [ '<sip:cached@127.0.0.1:5072>' ], expires => 600);
    is($r && $r->code, 200, 'cached: REGISTER on A');
    ok(defined time_until_b('cached', qr/^302 <sip:cached\@127\.0\.0\.1:5072>/, time), 'cached: B routes it');
    my ($aor) = SipRegTest::postgres_sql($pg, "SELECT aor FROM sip_location WHERE contact = 'sip:cached\@127.0.0.1:5072'");
    ok($aor, "cached: the row is in the table (AoR $aor)");
    # A's note may reach B after B read the row (and drop what B cached
    # then): once it is in, B reads the AoR into its cache again
    sleep 0.3;
    # each of B's engines keeps its own cache, and each request comes from
    # a new port (SO_REUSEPORT picks the engine): enough of them that
    # every engine of B has read the AoR (2 engines: all but 1 in 2 000)
    b_answer('cached') for 1 .. ($ENV{SIP_TEST_ENGINES} && $ENV{SIP_TEST_ENGINES} > 1 ? 12 : 1);
    # behind the nodes' backs: no note
    SipRegTest::postgres_sql($pg, "UPDATE sip_location SET contact = 'sip:cached\@127.0.0.1:5073' "
                                . "WHERE contact = 'sip:cached\@127.0.0.1:5072'");
    sleep 0.3;
    like(b_answer('cached'), qr/^302 <sip:cached\@127\.0\.0\.1:5072>/,
         'cached: B answers from its cache (the row changed without a note is not read)');
    SipRegTest::postgres_sql($pg, "NOTIFY sip_location, 'elsewhere $aor'");
    my $t = time_until_b('cached', qr/^302 <sip:cached\@127\.0\.0\.1:5073>/, time);
    ok(defined $t && $t <= $BOUND, sprintf('cached: a note for the AoR makes B read it again (%.1f ms)',
                                           1000 * ($t // 99)));
    SipRegTest::postgres_sql($pg, "NOTIFY sip_location, 'elsewhere sip:other\@example.org'");
    ok(defined time_until_b('cached', qr/^302 <sip:cached\@127\.0\.0\.1:5073>/, time), 'cached: notes for other AoRs are harmless');
}

# ------------------------------------------------------------ 200 at once
# REGISTERs for user$tag$i, all sent before any answer is read, and sent
# again after 0.5 s while unanswered, as a UDP client does (RFC 3261
# §17.1.2.2: the loopback drops what overflows the socket's buffer); the
# final answer of each (by Call-ID) within $wait seconds.  $during->($i)
# runs after the $i-th first send.
sub burst {
    my ($node, $tag, $n, $wait, $during, $gap, $contact) = @_;
    my $s = $node->udp_socket;
    my (%want, %msg);
    for my $i (1 .. $n) {
        my $u = "$tag$i";
        my $to = '<' . $node->aor($u) . '>';
        my $cid = rand_token(12) . "\@$tag";
        $want{$cid} = 'none';
        $msg{$cid} = $node->sip_request(method => 'REGISTER', uri => 'sip:127.0.0.1:' . $node->sip_port,
                                        to => $to, from => "$to;tag=" . rand_token(6), call_id => $cid,
                                        sock => $s,
                                        headers => [ Contact => $contact ? $contact->($u)
                                                                         : "<sip:$u\@127.0.0.1:5074>",
                                                     Expires => 600 ]);
        $node->udp_send($msg{$cid}, sock => $s);
        $during->($i) if $during;
        sleep $gap if $gap;
    }
    my %user;
    $user{$_} = ($msg{$_} =~ /^To: <sip:([^@]+)\@/mi)[0] for keys %msg;
    my $end = time + $wait;
    my $resend = time + 0.5;
    while ((grep { $_ eq 'none' } values %want) && time < $end) {
        if (time >= $resend) {
            $node->udp_send($msg{$_}, sock => $s) for grep { $want{$_} eq 'none' } keys %want;
            $resend = time + 0.5;
        }
        my $d = $node->udp_recv($s, 0.1) // next;
        my $m = SipTest::parse_msg($d);
        next unless $m->is_response && $m->code >= 200;
        my $cid = $m->header('call-id') // '';
        $want{$cid} = $m->code if exists $want{$cid};
    }
    my %by;
    $by{$_}++ for values %want;
    return wantarray ? (\%by, { map { $user{$_} => $want{$_} } keys %want }) : \%by;
}

# $n changes of one AoR sent at once (one Call-ID, CSeq 1..$n, the same
# Contact with q = 0.$i): several land in one batch, the first on the fast
# way, the others after it in order.  Returns { cseq => [code, Contact] }.
sub seq_burst {
    my ($node, $u, $n) = @_;
    my $s = $node->udp_socket;
    my $to = '<' . $node->aor($u) . '>';
    my $cid = rand_token(12) . "\@seq";
    my $from = "$to;tag=" . rand_token(6);
    my (%msg, %got);
    for my $i (1 .. $n) {
        $msg{$i} = $node->sip_request(method => 'REGISTER', uri => 'sip:127.0.0.1:' . $node->sip_port,
                                      to => $to, from => $from, call_id => $cid, cseq => $i, sock => $s,
                                      headers => [ Contact => "<sip:$u\@127.0.0.1:5079>;q=0.$i",
                                                   Expires => 600 ]);
        $node->udp_send($msg{$i}, sock => $s);
    }
    my $end = time + 10;
    while (keys %got < $n && time < $end) {
        my $d = $node->udp_recv($s, 0.2) // next;
        my $m = SipTest::parse_msg($d);
        next unless $m->is_response && $m->code >= 200;
        my ($cseq) = ($m->header('cseq') // '') =~ /^(\d+)/;
        $got{$cseq} //= [ $m->code, $m->header('contact') // '' ] if $cseq;
    }
    return \%got;
}
# The counters PostgreSQL keeps of the table: rows read by sequential
# scans, rows inserted.
sub table_stats {
    my ($scans, $ins) = split /\|/, SipRegTest::postgres_sql($pg, "SELECT seq_tup_read, n_tup_ins FROM "
                                                          . "pg_stat_user_tables WHERE relname = 'sip_location'") // '';
    return ($scans // -1, $ins // -1);
}
{
    # a table grown without statistics (no ANALYZE yet, as in the first
    # minutes of a busy server): a batch must still read its AoRs by the
    # primary key, not scan every row (that cost grew with the table)
    SipRegTest::postgres_sql($pg, "INSERT INTO sip_location (aor, contact, params, call_id, cseq, expires, q, path) "
                                . "SELECT 'sip:filler' || i || '\@127.0.0.1', 'sip:f' || i || '\@127.0.0.1:5090', '', 'f', 1, "
                                . "9000000000000000, 1000, '' FROM generate_series(1, 20000) AS i");
    my ($scans0, $ins0) = table_stats();
    my $mark = $na->log_mark;
    my $by = burst($na, 'burst', 200, 20);
    my ($scans, $ins) = table_stats();
    for (1 .. 150) {    # the backends report their counters within a second or so
        last if $ins >= $ins0 + 400;
        sleep 0.1;
        ($scans, $ins) = table_stats();
    }
    # (the rows this test's own queries scanned earlier may be counted
    # late: a few dozen; one scan of the table reads 20 000)
    ok($ins >= $ins0 + 400 && $scans - $scans0 < 20000,
       "200 REGISTERs on a table of 20 000 rows without statistics: no sequential scan of it")
        or diag("seq_tup_read $scans0 -> $scans, n_tup_ins $ins0 -> $ins");
    is($by->{200} // 0, 200, '200 REGISTERs sent at once: all answered 200')
        or diag(join(', ', map { "$_: $by->{$_}" } sort keys %$by), "\n", $na->log_since($mark), "\n",
                join("\n", SipRegTest::postgres_sql($pg, "SELECT pid, state, wait_event_type, wait_event, left(query, 150) FROM pg_stat_activity WHERE datname = 'sip'")));
    is(SipRegTest::postgres_sql($pg, "SELECT count(*) FROM sip_location WHERE aor LIKE 'sip:burst%' AND contact <> ''"),
       200, '... and all 200 bindings are in the table');
    # changes of one AoR within a batch and across batches keep their order:
    # each is answered with its own change in place, the last one stays
    for my $round (1, 2) {
        my $got = seq_burst($na, "seq$round", 8);
        my @bad = grep { !$got->{$_} || $got->{$_}[0] != 200 || $got->{$_}[1] !~ /;q=0\.$_\b/ } 1 .. 8;
        ok(!@bad, "seq$round: 8 changes of one AoR sent at once, each answered 200 with its own q")
            or diag(join "\n", map { "CSeq $_: " . ($got->{$_} ? "@{$got->{$_}}" : 'none') } 1 .. 8);
        is(SipRegTest::postgres_sql($pg, "SELECT cseq || ' ' || q FROM sip_location WHERE aor LIKE 'sip:seq$round\@%' "
                                       . "AND contact <> ''"), '8 800', "seq$round: the last change is the one stored");
    }
    my @tx = $na->log_since($mark) =~ /(\d+) changes committed in one transaction/g;
    my $sum = 0;
    $sum += $_ for @tx;
    ok(@tx && $sum > @tx, sprintf('... group commit: %d of them in %d shared transactions', $sum, scalar @tx));
    like(b_answer('burst77'), qr/^302 <sip:burst77\@127\.0\.0\.1:5074>/, '... and node B routes them');
}

# ------------------------------------------------------------ odd characters
# A batch's rows travel as PostgreSQL arrays (one per column): quotes,
# backslashes, commas and braces in a display name or a URI must be stored
# as they came.
{
    my $by = burst($na, 'odd', 30, 20, undef, 0,
                   sub { qq{"A \\"q\\" \\\\ {b,c}" <sip:$_[0]\@127.0.0.1:5075;x={1,2}>} });
    is($by->{200} // 0, 30, '30 REGISTERs with quotes, backslashes, commas and braces: all answered 200');
    my @rows = SipRegTest::postgres_sql($pg, "SELECT DISTINCT contact || ' ' || display FROM sip_location "
                                           . "WHERE aor = 'sip:odd7\@127.0.0.1' AND contact <> ''");
    is_deeply(\@rows, [ 'sip:odd7@127.0.0.1:5075;x={1,2} "A \\"q\\" \\\\ {b,c}"' ], '... stored as they came')
        or diag(explain \@rows);
    like(b_answer('odd7'), qr/^302 .*<sip:odd7\@127\.0\.0\.1:5075;x=\{1,2\}>/, '... and node B routes them');
}

# ------------------------------------------------------------ connections killed
# Local ports of the TCP connections the nodes' engines hold to PostgreSQL.
sub engine_db_ports {
    my @pids = map { $_->engine_pid } @_;
    my @ports;
    for my $line (`ss -tnpH state established 2>/dev/null`) {
        next unless $line =~ /127\.0\.0\.1:(\d+)\s+127\.0\.0\.1:$pg->{port}\b.*pid=(\d+)/;
        my ($port, $pid) = ($1, $2);
        push @ports, $port if grep { $_ == $pid } @pids;
    }
    return @ports;
}
{
    my $mark_a = $na->log_mark;
    my $mark_b = $nb->log_mark;
    my $killed;
    # REGISTERs in flight while every mod_sip connection is killed
    # the engines' connections only (found by their client ports): httpd's
    # own children hold mod_dbd connections too, which are not ours to test
    my @ports = engine_db_ports($na, $nb);
    my ($by, $codes) = burst($na, 'kill', 60, 20, sub {
        $killed = SipRegTest::postgres_sql($pg, 'SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity '
                                              . "WHERE datname = 'sip' AND client_port IN (" . join(',', @ports) . ')')
            if $_[0] == 20;
    }, 0.01);
    ok($killed && $killed >= 3, "the engines' database connections killed mid-run ($killed of "
                                . scalar(@ports) . ')');
    my %by = %$by;
    is(($by{200} // 0) + ($by{500} // 0) + ($by{503} // 0), 60, 'every REGISTER in flight is answered, 200 or 500/503')
        or diag(join ', ', map { "$_: $by{$_}" } sort keys %by);
    diag(join ', ', map { "$_: $by{$_}" } sort keys %by);
    # a 200 only once its change is committed: each one's row is there
    my @ok = sort grep { $codes->{$_} == 200 } keys %$codes;
    my %stored = map { $_ => 1 } SipRegTest::postgres_sql($pg, "SELECT contact FROM sip_location "
                                                        . "WHERE aor LIKE 'sip:kill%' AND contact <> ''");
    my @lost = grep { !$stored{"sip:$_\@127.0.0.1:5074"} } @ok;
    ok(@ok && !@lost, sprintf('the connections killed: each of the %d REGISTERs answered 200 is in the table',
                              scalar @ok)) or diag("answered 200, not stored: @lost");
    ok(wait_until(5, sub { $nb->log_since($mark_b) =~ /listening for changes was lost/ }),
       "node B noticed that its listening connection was lost");
    # recovered: new REGISTERs are stored and seen on B within the bound again
    my $ok = 0;
    for my $try (1 .. 20) {
        my $r = $na->register(user => 'after', contacts => [ "<sip:after\@127.0.0.1:5076>" ], expires => 600);
        if ($r && $r->code == 200) { $ok = 1; last }
        sleep 0.25;
    }
    ok($ok, 'after the kill: a REGISTER on A -> 200 again');
    my $by2 = burst($na, 'again', 50, 10);
    is($by2->{200} // 0, 50, 'after the kill: 50 REGISTERs at once all -> 200');
    ok(wait_until(5, sub { b_answer('again7') =~ /^302/ }), 'after the kill: B routes them')
        or diag(b_answer('again7'), $nb->log_since($mark_b));
    # B's engines listen again once their listening connections are back
    # (each reconnects on its own, a retry every 0.7 s): until then B reads
    # the database for every lookup.  Try new AoRs until B's cache is in use
    # again, which a change behind its back shows (it is not seen).
    my ($t, $cached);
    for my $try (1 .. 20) {
        my $u = "late$try";
        b_answer($u);
        my $r = $na->register(user => $u, contacts => [ "<sip:$u\@127.0.0.1:5077>" ], expires => 600);
        $t = time_until_b($u, qr/^302 <sip:\Q$u\E\@127\.0\.0\.1:5077>/, time);
        SipRegTest::postgres_sql($pg, "UPDATE sip_location SET contact = 'sip:$u\@127.0.0.1:5078' "
                                    . "WHERE contact = 'sip:$u\@127.0.0.1:5077'");
        if (b_answer($u) =~ /^302 <sip:\Q$u\E\@127\.0\.0\.1:5077>/) { $cached = $try; last }
        sleep 0.25;
    }
    ok($cached, sprintf('after the kill: B answers from its cache again (attempt %d)', $cached // 0));
    ok($cached && defined $t && $t <= $BOUND,
       sprintf('after the kill: B caches and hears notes again (%.1f ms)', 1000 * ($t // 99)));
}

$na->stop;
$nb->stop;
ok($pg->{stop}->('fast'), 'PostgreSQL stopped');
done_testing;
