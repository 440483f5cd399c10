#!/usr/bin/perl
# Transport limits (issue 10, items 4, 6, 7): connections per source
# address, total connections with eviction of the longest idle ones, the
# time a started message has to arrive whole, Content-Length on TCP, huge
# request lines answered instead of reset, and rate-limited log lines.
# Limits are set low so that every attack here takes a few dozen
# connections and seconds; sources are 127.0.0.1 .. 127.0.0.6.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use IO::Select;
use IO::Socket::INET;
use Socket qw(IPPROTO_TCP TCP_NODELAY);
use SipTest qw(parse_msg wait_until);

my ($PER_IP, $MAX, $MSG_TIMEOUT, $LOG_BURST, $LOG_SECS) = (20, 60, 2, 3, 4);

my $t = SipTest->new(
    server_conf => "SipTcpMaxConnectionsPerIP $PER_IP\nSipTcpMaxConnections $MAX\n"
                 . "SipLogRateLimit $LOG_BURST $LOG_SECS\n"
                 . "LoadModule status_module $SipTest::MODDIR/mod_status.so\n"
                 . "<Location /server-status>\n    SetHandler server-status\n</Location>",
    vhost_conf  => "SipTcpMessageTimeout $MSG_TIMEOUT\nSipTcpIdleTimeout 60",
    scripts     => {
        'slow@127.0.0.1' => "#!/bin/sh\n/bin/sleep 4\nprintf 'SIP/2.0 200 OK\\n\\n'\n",
    },
);
my $port = $t->sip_port;
my $engine = $t->engine_pid;
ok($engine, 'engine running');
sub uri { "sip:$_[0]\@127.0.0.1:$port" }

sub connect_from {
    my ($addr) = @_;
    return $t->tcp_connect(local_addr => $addr, timeout => 3);
}

# Has the server closed $s (EOF or reset) within $timeout seconds?
sub server_closed {
    my ($s, $timeout) = @_;
    my $end = time + $timeout;
    my $sel = IO::Select->new($s);
    while ((my $left = $end - time) > 0) {
        next unless $sel->can_read($left);
        my $n = sysread($s, my $buf, 65536);
        return 1 if !$n;            # 0: EOF, undef: reset
        ${*$s}{siptest_buf} .= $buf;
    }
    return 0;
}

sub options_on {
    my ($s, $label) = @_;
    my $req = $t->sip_request(method => 'OPTIONS', transport => 'TCP', sock => $s, uri => uri('nobody'));
    $t->send_raw($s, $req) or return 0;
    my $m = $t->read_response($s, 3);
    return $m && $m->code == 200 && $m->header('call-id') eq parse_msg($req)->header('call-id');
}

# The mod_status counters (?auto) as a hash.
sub counters {
    my $body = $t->http_get('/server-status?auto');
    my %s;
    $s{$1} = $2 while $body =~ /^(Sip\w+): (\d+)\r?$/mg;
    return \%s;
}

sub count_lines {
    my ($mark, $re) = @_;
    return scalar grep { /$re/ } split /\n/, $t->log_since($mark);
}

# ------------------------------------------------ item 4: per-address limit
my @attacker;
my $c0 = counters();
ok(defined $c0->{SipTcpConnectionsRefused}, 'mod_status shows SipTcpConnectionsRefused');
{
    my $mark = $t->log_mark;
    my $tries = $PER_IP + 10;
    for (1 .. $tries) {
        my $s = connect_from('127.0.0.2') or last;
        push @attacker, $s;
    }
    is(scalar(@attacker), $tries, "127.0.0.2 opened $tries TCP connections (the kernel accepts them)");
    sleep 1;
    my @closed = grep { server_closed($_, 0.05) } @attacker;
    my %gone = map { $_ => 1 } @closed;
    @attacker = grep { !$gone{$_} } @attacker;
    is(scalar(@closed), 10, "the server closed the 10 connections above SipTcpMaxConnectionsPerIP $PER_IP at once");
    is(scalar(@attacker), $PER_IP, "one source holds at most $PER_IP idle connections");
    diag(sprintf 'measured: 127.0.0.2 holds %d idle connections of %d opened', scalar(@attacker), $tries);

    my $more = connect_from('127.0.0.2');
    ok($more && server_closed($more, 2), 'a further connection from 127.0.0.2 is closed at once');

    # another source is not affected: a fresh client gets OPTIONS answered
    my $fresh = connect_from('127.0.0.1');
    ok($fresh && options_on($fresh), 'a fresh client (127.0.0.1) connects and gets OPTIONS answered while 127.0.0.2 holds its maximum');
    my @other = map { connect_from('127.0.0.3') } 1 .. 5;
    ok(!(grep { !$_ || server_closed($_, 0.3) } @other), 'the per-address limit is per address: 127.0.0.3 opens 5 more');
    ok(options_on($attacker[0]), "127.0.0.2's held connections still work");
    ok($t->options_ok('udp'), 'UDP served meanwhile');
    close $_ for grep { $_ } $fresh, @other;

    is(counters()->{SipTcpConnectionsRefused} - $c0->{SipTcpConnectionsRefused}, 11,
       'SipTcpConnectionsRefused counted the 11 refusals');
    my $refused = count_lines($mark, qr/TCP connection from 127\.0\.0\.2:\d+ refused: $PER_IP connections from that address already/);
    cmp_ok($refused, '>=', 1, 'the refusals are logged');
    cmp_ok($refused, '<=', $LOG_BURST, "... at most $LOG_BURST lines (SipLogRateLimit $LOG_BURST $LOG_SECS) for 11 refusals ($refused)");
    ok(count_lines($mark, qr/refused TCP connections from 127\.0\.0\.2 within $LOG_SECS s: logging no more/) == 1,
       '... then one line says the rest is not logged') or diag($t->log_since($mark));
}
close $_ for @attacker;
@attacker = ();
sleep 0.5;

# ------------------------------------------------ item 4: total limit, eviction
{
    my $mark = $t->log_mark;
    # the oldest: one connection with a transaction in progress (a script
    # that takes 4 s), then 19 idle ones, all from 127.0.0.3
    my $busy = connect_from('127.0.0.3');
    my $inv = $t->sip_request(method => 'INVITE', transport => 'TCP', sock => $busy, uri => uri('slow'));
    $t->send_raw($busy, $inv);
    my $trying = $t->read_response($busy, 2);
    is($trying && $trying->code, 100, 'the busy connection\'s INVITE is in progress (100 Trying)');
    my @old = map { connect_from('127.0.0.3') } 2 .. $PER_IP;
    sleep 0.4;
    my @mid = map { connect_from('127.0.0.4') } 1 .. $PER_IP;
    sleep 0.4;
    my @new = map { connect_from('127.0.0.5') } 1 .. $MAX - 2 * $PER_IP;
    sleep 0.4;
    # 1 + 19 + 20 + 20 = 60 = SipTcpMaxConnections: none closed yet
    my @all = ($busy, @old, @mid, @new);
    is(scalar(grep { $_ } @all), $MAX, "$MAX connections open (SipTcpMaxConnections $MAX)");
    ok(!(grep { server_closed($_, 0) } @old, @mid, @new), '... none closed so far');

    # 10 newcomers from 127.0.0.6: the 10 connections idle the longest go
    my @late = map { connect_from('127.0.0.6') } 1 .. 10;
    sleep 1;
    ok(!(grep { !$_ || server_closed($_, 0) } @late), 'the 10 new connections beyond the total are kept');
    my @evicted_old = grep { server_closed($_, 0.05) } @old;
    my @evicted_other = grep { server_closed($_, 0.05) } @mid, @new;
    is(scalar(@evicted_old), 10, 'the 10 connections idle the longest (127.0.0.3\'s) were closed to make room');
    is(scalar(@evicted_other), 0, 'none of the more recently used ones');
    my @r = $t->read_until_final($busy, 6);
    is(@r ? $r[-1]->code : 0, 200, 'the oldest connection, busy with a transaction, was not closed: its INVITE got 200');
    $t->send_raw($busy, $t->ack_for($inv, $r[-1], new_branch => 1)) if @r && $r[-1]->code == 200;
    ok(options_on($late[0]), 'a newcomer gets OPTIONS answered');
    is(counters()->{SipTcpConnectionsEvicted} - $c0->{SipTcpConnectionsEvicted}, 10,
       'SipTcpConnectionsEvicted counted the 10 evictions');
    my $ev = count_lines($mark, qr/SipTcpMaxConnections \($MAX\) reached: closing the TCP connection idle the longest/);
    ok($ev >= 1 && $ev <= $LOG_BURST, "evictions logged, rate-limited ($ev lines for 10)");
    close $_ for grep { $_ } @all, @late;
}
sleep 0.5;

# ------------------------------------------------ item 4: message timeout
{
    my $mark = $t->log_mark;
    # a client trickling one byte every 0.5 s never finishes its message
    my $slow = connect_from('127.0.0.1');
    setsockopt($slow, IPPROTO_TCP, TCP_NODELAY, 1);
    my $req = $t->sip_request(method => 'OPTIONS', transport => 'TCP', sock => $slow, uri => uri('nobody'));
    # keep-alive pinger on another connection: CRLFCRLF every 0.5 s
    my $ka = connect_from('127.0.0.1');
    my $t0 = time;
    my ($closed_at, $i, $pongs) = (undef, 0, 0);
    my $sel = IO::Select->new($slow);
    while (time - $t0 < $MSG_TIMEOUT + 3) {
        $t->send_raw($slow, substr($req, $i++, 1)) unless defined $closed_at;
        $t->send_raw($ka, "\r\n\r\n");
        if (!defined $closed_at && server_closed($slow, 0.5)) { $closed_at = time - $t0 }
        else { sleep 0.5 if defined $closed_at }
        $pongs++ while ($t->read_raw($ka, 2, 0.01) // '') eq "\r\n";
    }
    ok(defined $closed_at && $closed_at >= $MSG_TIMEOUT - 0.3 && $closed_at <= $MSG_TIMEOUT + 1.5,
       sprintf('a message trickling in a byte every 0.5 s is cut after SipTcpMessageTimeout %d (%s)', $MSG_TIMEOUT,
               defined $closed_at ? sprintf('%.1f s, %d bytes sent', $closed_at, $i) : 'still open'));
    ok(!server_closed($ka, 0), sprintf('a connection sending only CRLF keep-alives stays open (%.1f s, %d pongs)', time - $t0, $pongs));
    cmp_ok($pongs, '>=', 5, '... and its pings are answered');
    ok(options_on($ka), '... and it still carries requests');
    ok($t->wait_log($mark, qr/TCP connection from 127\.0\.0\.1:\d+ closed: message not complete within $MSG_TIMEOUT s/),
       'the message timeout is logged');
    is(counters()->{SipTcpMessageTimeouts} - $c0->{SipTcpMessageTimeouts}, 1, 'SipTcpMessageTimeouts counted it');
    close $_ for $slow, $ka;

    # a connection that says nothing at all is left to SipTcpIdleTimeout
    my $quiet = connect_from('127.0.0.1');
    ok(!server_closed($quiet, $MSG_TIMEOUT + 1), 'a silent connection is not cut by the message timeout');
    close $quiet;
}

# ------------------------------------------------ item 6: Content-Length, huge lines
{
    my $c = connect_from('127.0.0.1');
    my $req = $t->sip_request(method => 'OPTIONS', transport => 'TCP', sock => $c, uri => uri('nobody'));
    $req =~ s/^Content-Length: 0\r\n//m or die 'no Content-Length to remove';
    $t->send_raw($c, $req);
    my $m = $t->read_response($c, 3);
    is($m && $m->code, 400, 'TCP request without Content-Length -> 400');
    is($m && $m->reason, 'Missing Content-Length', '... "Missing Content-Length"');
    is($m && $m->header('call-id'), parse_msg($req)->header('call-id'), '... for that request (Call-ID copied)');
    ok(server_closed($c, 3), '... and the connection is closed (framing cannot be trusted)');

    my $u = $t->udp_socket;
    my $ureq = $t->sip_request(method => 'OPTIONS', sock => $u, uri => uri('nobody'));
    $ureq =~ s/^Content-Length: 0\r\n//m;
    my @r = $t->udp_req($ureq, 3, sock => $u);
    is(@r ? $r[-1]->code : 0, 200, 'UDP request without Content-Length is still fine (the datagram frames it)');
}
for my $case (['2.6 MB request line', 414, sub { (uri('a' x 2_600_000), []) }],
              ['1 MB header line', 400, sub { (uri('nobody'), [ 'X-Huge' => 'h' x 1_000_000 ]) }],
              ['header block of 100 000 lines', 400, sub { (uri('nobody'), [ map { ("X-H$_" => 'v') } 1 .. 100_000 ]) }]) {
    my ($what, $code, $make) = @$case;
    my $mark = $t->log_mark;
    my $c = connect_from('127.0.0.1');
    my ($ruri, $hdrs) = $make->();
    my $req = $t->sip_request(method => 'OPTIONS', transport => 'TCP', sock => $c, uri => $ruri, headers => $hdrs);
    my $t0 = time;
    my $sent = $t->send_raw($c, $req);
    ok($sent, sprintf("$what: the server read all %.1f MB (no reset while sending)", length($req) / 1e6));
    my $m = $t->read_response($c, 5);
    is($m && $m->code, $code, "$what over TCP -> $code answered") or diag($t->log_since($mark));
    my ($cid) = $req =~ /^Call-ID: (\S+)/m;
    is($m && $m->header('call-id'), $cid, "$what: the answer is for that request (Call-ID copied)");
    ok(server_closed($c, 5), "$what: then the connection is closed");
    cmp_ok(time - $t0, '<', 5, sprintf("$what: promptly (%.2f s)", time - $t0));
}
{
    # a body over SipLimitRequestBody sent in one go: 413 arrives, no reset
    my $c = connect_from('127.0.0.1');
    my $req = $t->sip_request(method => 'MESSAGE', transport => 'TCP', sock => $c, uri => uri('nobody'),
                              content_type => 'text/plain', body => 'b' x 200_000);
    $t->send_raw($c, $req);
    my $m = $t->read_response($c, 5);
    is($m && $m->code, 413, 'body over SipLimitRequestBody sent whole: 413 received before the close');
    ok(server_closed($c, 5), '... then the connection is closed');
}
ok($t->options_ok('tcp') && $t->options_ok('udp'), 'server answers after the oversized messages');

# ------------------------------------------------ item 7: refusal lines rate-limited
{
    my $mark = $t->log_mark;
    my $u = $t->udp_socket;
    my $long = 'x' x 2000;
    my $answered = 0;
    for my $i (1 .. 20) {
        my @r = $t->transact('udp', method => 'OPTIONS', sock => $u, uri => uri("refuse$i$long"),
                             headers => [ Require => 'no-such-extension' ]);
        $answered++ if @r && $r[-1]->code == 420;
    }
    is($answered, 20, 'every one of 20 requests with an unknown Require is refused (420)');
    my $lines = count_lines($mark, qr/sip: 420 Bad Extension for OPTIONS .* from 127\.0\.0\.1: unsupported extension/);
    is($lines, $LOG_BURST, "only $LOG_BURST refusal lines for one source within $LOG_SECS s");
    is(count_lines($mark, qr/refused requests from 127\.0\.0\.1 within $LOG_SECS s: logging no more/), 1,
       '... then one line says the rest is not logged');
    my ($one) = grep { /420 Bad Extension/ } split /\n/, $t->log_since($mark);
    my ($logged_uri) = ($one // '') =~ /for OPTIONS (\S+)\.\.\. from/;
    is(length($logged_uri // ''), 256, 'the Request-URI in the log line is cut at 256 characters');
    ok(!($t->log_since($mark) =~ /x{300}/), 'no 2000-character URI anywhere in the log');

    # another source has its own allowance
    my $u2 = IO::Socket::INET->new(LocalAddr => '127.0.0.2', Proto => 'udp') or die "udp: $!";
    my $m2 = $t->log_mark;
    my @r = $t->transact('udp', method => 'OPTIONS', sock => $u2, uri => uri('other'),
                         headers => [ Require => 'no-such-extension' ]);
    is(@r ? $r[-1]->code : 0, 420, '127.0.0.2 refused as well');
    is(count_lines($m2, qr/420 Bad Extension .* from 127\.0\.0\.2/), 1, '... and its refusal is logged');

    # after the interval: logged again, with the count of the lines not logged
    sleep $LOG_SECS + 0.2;
    my $m3 = $t->log_mark;
    @r = $t->transact('udp', method => 'OPTIONS', sock => $u, uri => uri('again'),
                      headers => [ Require => 'no-such-extension' ]);
    ok($t->wait_log($m3, qr/420 Bad Extension for OPTIONS \Q${\ uri('again')}\E from 127\.0\.0\.1: .*\(earlier ones not logged: 17 from 127\.0\.0\.1/),
       'after the interval the next line is logged, saying 17 were not') or diag($t->log_since($m3));
}
{
    # bad messages (answered 400) are rate-limited too
    my $mark = $t->log_mark;
    my $u = $t->udp_socket;
    for (1 .. 12) {
        $t->udp_req($t->sip_request(method => 'OPTIONS', sock => $u, uri => uri('nobody'), omit => ['To']), 2, sock => $u);
    }
    my $lines = count_lines($mark, qr/sip: 400 Missing To Header for message from 127\.0\.0\.1/);
    is($lines, $LOG_BURST, "12 bad messages from one source: $LOG_BURST log lines");
}

is($t->engine_pid, $engine, 'engine not restarted');
$t->dump_log_on_failure;
$t->stop;
done_testing;
