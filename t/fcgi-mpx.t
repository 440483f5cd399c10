#!/usr/bin/perl
# SIP-CGI over FastCGI with several requests per connection (docs/fastcgi.md,
# "Several requests per connection"): a worker that answers FCGI_GET_VALUES
# with FCGI_MPXS_CONNS 1 gets requests while it is busy with others, up to
# its FCGI_MAX_REQS, instead of their waiting in the engine's queue or being
# refused; a worker that dies with several in flight fails each of them
# (500); a CANCEL of one aborts only that one (FCGI_ABORT_REQUEST) and the
# worker lives on; a multiplexing server that sends a record for a request
# not in flight fails every request on the connection and is logged.
# With SipEngines 2 (make test-engines2) every engine has its own pool and
# connections: the requests are sent from sockets that reach engine 0, and
# mod_status sums the engines' pools.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use File::Copy ();
use SipTest qw(parse_msg wait_until);

my $repo = SipTest->repo;
my $t = SipTest->new(
    start => 0,
    server_conf => "LoadModule status_module $SipTest::MODDIR/mod_status.so\n"
                 . "<Location /server-status>\n    SetHandler server-status\n</Location>\n",
    vhost_conf => <<'EOC',
SipScriptTimeout 6
SipFastCGI @SCRIPTS@/mpx.py 1 1
SipFastCGIQueue 0
SipFastCGIConnect badmpx* unix:@VAR@/bad-mpx.sock 1
EOC
);
my $sd = $t->scripts_dir;
File::Copy::copy("$repo/sip-cgi-bin/sipfcgi.py", "$sd/sipfcgi.py") or die $!;
File::Copy::copy("$repo/t/fcgi/behave.py", "$sd/mpx.py") or die $!;
chmod 0755, "$sd/mpx.py";
chmod 0644, "$sd/sipfcgi.py";
symlink('mpx.py', "$sd/$_\@127.0.0.1") or die for qw(slow fine crash nap);
$t->write_script("badmpx$_\@127.0.0.1", text => "#!/bin/sh\nexit 1\n") for 1 .. 2;
my $bad_sock = $t->var . '/bad-mpx.sock';
my $bad = fork // die;
if (!$bad) { exec "$repo/t/fcgi/bad_server.py", 'mpx', $bad_sock or exit 127 }
END { if ($bad) { kill 'TERM', $bad; waitpid($bad, 0) } }
ok(wait_until(5, sub { -S $bad_sock }), 'the bad multiplexing server listens');
$t->start;
my $port = $t->sip_port;
my @engines = $t->engine_pids;
my $E = scalar @engines;    # engines: each starts its pool's worker

# Sends a request on its own socket (one that reaches engine 0); returns
# [socket, raw request].
sub send_req {
    my ($user, $method) = @_;
    my $s = $t->udp_socket_to_engine(0) or die 'no socket reaches engine 0';
    my $req = $t->sip_request(method => $method // 'MESSAGE', sock => $s,
                              uri => "sip:$user\@127.0.0.1:$port");
    $t->udp_send($req, sock => $s);
    return [$s, $req];
}
# The final answer to a request sent with send_req (the ACK of an INVITE's).
sub final {
    my ($x, $timeout) = @_;
    my $end = time + ($timeout // 8);
    while (time < $end) {
        my $d = $t->udp_recv($x->[0], $end - time) // last;
        my $m = parse_msg($d);
        next unless $m->is_final && ($m->header('cseq') // '') !~ /CANCEL/;
        $t->udp_send($t->ack_for($x->[1], $m), sock => $x->[0]) if $x->[1] =~ /^INVITE /;
        return $m;
    }
    return undef;
}
sub pool_line {
    my ($st) = $t->http_get('/server-status?auto') =~ /^(SipFastCGIPool: \S*mpx\.py .*)$/m;
    return $st // '';
}

# ---- several requests in flight on the one worker of a pool with queue 0
{
    # the first request learns, with FCGI_GET_VALUES, that the worker multiplexes
    is(final(send_req('fine'))->code, 200, 'a first request opens the connection');
    my @x = map { send_req('nap') } 1 .. 4;
    sleep 0.3;
    like(pool_line(), qr/ workers=$E busy=[2-4] queued=0 /,
         'one worker, several requests in flight on its connection, none queued');
    my @r = map { final($_) } @x;
    is(scalar(grep { $_ && $_->code == 200 } @r), 4,
       'pool max 1, queue 0: 4 requests at once all answered 200 (none refused 503)');
    my %pids = map { ($_ ? $_->header('x-worker-pid') // 0 : 0) => 1 } @r;
    is(scalar(keys %pids), 1, '... by the same worker process');
}

# ---- a worker dies with several requests in flight: each of them 500
{
    my $mark = $t->log_mark;
    my $slow = send_req('slow');
    sleep 0.3;
    my $crash = send_req('crash');
    my $other = send_req('nap');
    my ($rs, $rc, $ro) = (final($slow), final($crash), final($other));
    is($rs && $rs->code, 200, 'the request the worker finished before dying: 200');
    is($rc && $rc->code, 500, 'the request it died in: 500');
    is($ro && $ro->code, 500, 'the request in flight behind it: 500');
    ok($t->wait_log($mark, qr/closed the connection with 2 requests before END_REQUEST/, 3),
       '... logged with the number of requests lost');
    my $ok;
    wait_until(4, sub { $ok = final(send_req('fine')); $ok && $ok->code == 200 }, 0.2);
    is($ok && $ok->code, 200, 'the restarted worker answers');
}

# ---- a CANCEL aborts one request; the others and the worker go on
{
    my $mark = $t->log_mark;
    my $slow = send_req('slow');
    sleep 0.3;
    my $inv = send_req('nap', 'INVITE');
    my $after = send_req('nap');
    sleep 0.3;
    (my $cancel = $inv->[1]) =~ s/^INVITE /CANCEL /;
    $cancel =~ s/^(CSeq:\s*\d+\s+)INVITE/${1}CANCEL/mi;
    $cancel =~ s/\r\n\r\n.*\z/\r\n\r\n/s;
    $cancel =~ s/^Content-Length:.*$/Content-Length: 0\r/mi;
    $cancel =~ s/^Content-Type:.*\r\n//mi;
    $t->udp_send($cancel, sock => $inv->[0]);
    my ($rs, $ri, $ra) = (final($slow), final($inv), final($after));
    is($rs && $rs->code, 200, 'the request ahead: 200');
    is($ri && $ri->code, 487, 'the cancelled INVITE: 487');
    is($ra && $ra->code, 200, 'the request behind it: 200');
    ok($rs && $ra && $rs->header('x-worker-pid') == $ra->header('x-worker-pid'),
       '... from the same worker: not killed for the abort');
    ok(wait_until(3, sub { pool_line() =~ / busy=0 / }, 0.1),
       'the aborted request freed its place (the worker ended it)');
    unlike($t->log_since($mark), qr/did not end an aborted request|exited with status|killed by signal/,
           'no worker killed or lost');
}

# ---- a multiplexing server that sends a record for a request not in flight
{
    my $mark = $t->log_mark;
    my $a = send_req('badmpx1');
    sleep 0.3;
    my $b = send_req('badmpx2');
    my ($ra, $rb) = (final($a), final($b));
    is($ra && $ra->code, 500, 'malformed multiplexed answer: the first request 500');
    is($rb && $rb->code, 500, '... and the second on the same connection 500');
    ok($t->wait_log($mark, qr/malformed FastCGI record from \S*bad-mpx\.sock: record for another request/, 3),
       'refused and logged');
}
is_deeply([$t->engine_pids], \@engines, 'no engine restarted');
ok($t->options_ok, 'engine still answers');
kill 'TERM', $bad;
waitpid($bad, 0);
$bad = 0;
$t->stop;
done_testing;
