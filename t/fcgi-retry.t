#!/usr/bin/perl
# When a request is sent again to another worker (docs/fastcgi.md, "When a
# connection is lost"): only when it provably never reached a worker.
#   - a worker killed in the middle of a batch, having answered nothing on
#     a kept connection: the requests it had may have run (here each one
#     appends its Call-ID to a file before it sleeps), so none is run again
#     elsewhere: each is answered 500 or its own 200, and no Call-ID is in
#     the file twice (the engine used to send them all again, taking a
#     connection closed before any answer for one closed while idle);
#   - a worker that closes its kept connection after every answer (here
#     t/fcgi/behave.py as closer.py: sipfcgi.py told to ignore
#     FCGI_KEEP_CONN), over its UNIX socket and as an external server over
#     TCP: no request fails; the engine sees the close while the
#     connection is idle, logs it and gives that pool one request per
#     connection (a request written as it closes would be lost).
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use File::Copy ();
use IO::Socket::INET;
use SipTest qw(wait_until);

my $repo = SipTest->repo;
my $tcp_port = do {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 1) or die $!;
    my $p = $s->sockport;
    close $s;
    $p;
};
my $t = SipTest->new(
    start => 0,
    vhost_conf => <<"EOC",
SipScriptTimeout 10
SipFastCGI \@SCRIPTS\@/mpxrec.py 1 1
SipFastCGIQueue 16
SipFastCGI \@SCRIPTS\@/closer.py 1 1
SipFastCGIConnect tclose* tcp:127.0.0.1:$tcp_port 2
EOC
);
my $sd = $t->scripts_dir;
my $seen = $t->scripts_dir . '/seen';     # behave.py's rec@ writes there
{ open(my $fh, ">", $seen) or die $!; close $fh; chmod 0666, $seen; }
File::Copy::copy("$repo/sip-cgi-bin/sipfcgi.py", "$sd/sipfcgi.py") or die $!;
chmod 0644, "$sd/sipfcgi.py";
File::Copy::copy("$repo/t/fcgi/behave.py", "$sd/$_") or die $! for qw(mpxrec.py closer.py);
chmod 0755, "$sd/mpxrec.py", "$sd/closer.py";
$t->write_script("$_\@127.0.0.1", symlink => 'mpxrec.py') for qw(rec warm);
$t->write_script("close\@127.0.0.1", symlink => 'closer.py');
$t->write_script("tclose\@127.0.0.1", text => "#!/bin/sh\nexit 1\n");
my $ext = fork // die;
if (!$ext) { exec "$sd/closer.py", $tcp_port or exit 127 }
END { if ($ext) { kill 'TERM', $ext; waitpid($ext, 0) } }
ok(wait_until(5, sub { IO::Socket::INET->new(PeerAddr => "127.0.0.1:$tcp_port") }),
   'the closing TCP server listens');
$t->start;
my $port = $t->sip_port;

sub send_req {
    my ($user) = @_;
    my $s = $t->udp_socket;
    my $req = $t->sip_request(method => 'MESSAGE', sock => $s, uri => "sip:$user\@127.0.0.1:$port");
    $t->udp_send($req, sock => $s);
    my ($cid) = $req =~ /^Call-ID:\s*(\S+)/mi;
    return { sock => $s, cid => $cid };
}
sub final { my ($x, $timeout) = @_; return $t->udp_final($x->{sock}, $timeout // 15) }
sub seen_lines {
    open(my $fh, '<', $seen) or return ();
    my @l = <$fh>;
    close $fh;
    chomp @l;
    return @l;
}

# ---- a worker killed mid-batch: nothing runs twice
{
    # the connections become kept ones (every engine's, with SipEngines 2)
    my @w = map { send_req('warm') } 1 .. 6;
    is(scalar(grep { my $r = final($_); $r && $r->code == 200 } @w), 6, 'warm-up: 200 each');
    sleep 0.3;
    my $mark = $t->log_mark;
    my @x = map { send_req('rec') } 1 .. 6;
    my ($first, $victim);
    wait_until(8, sub { ($first) = seen_lines(); $first }, 0.02);
    ($victim) = ($first // '') =~ /^(\d+) /;
    ok($victim && kill('KILL', $victim), "the worker killed while it runs its first request ($victim)");
    my %code;
    for my $x (@x) {
        my $r = final($x);
        $code{ $x->{cid} } = $r ? $r->code : 0;
    }
    is(scalar(grep { $_ == 200 || $_ == 500 } values %code), 6, 'each request answered 200 or 500')
        or diag(join ' ', values %code);
    ok(scalar(grep { $_ == 500 } values %code) >= 1, '... the ones lost with the worker 500');
    sleep 1.5;      # anything sent again would have run by now
    my %n;
    $n{ (split / /, $_)[1] }++ for seen_lines();
    my @twice = grep { $n{$_} > 1 } keys %n;
    is(scalar(@twice), 0, 'no request ran twice (each Call-ID at most once in the file)')
        or diag(join "\n", seen_lines());
    is(scalar(grep { $code{$_} == 200 && !$n{$_} } keys %code), 0, 'each 200 is a request that ran');
    ok($t->wait_log($mark, qr/mpxrec\.py (?:closed the connection|exited) with \d+ requests? before END_REQUEST \(not sent again/, 3),
       'the lost requests logged');
    my $ok;
    wait_until(5, sub { $ok = final(send_req('warm')); $ok && $ok->code == 200 }, 0.2);
    is($ok && $ok->code, 200, 'the restarted worker answers');
}

# ---- a worker that closes its kept connection after each answer: no failure
for my $case (['close', 'its UNIX socket'], ['tclose', 'an external server over TCP']) {
    my ($user, $what) = @$case;
    my $mark = $t->log_mark;
    my (%codes, %pids);
    for my $i (1 .. 40) {
        # the first ones spaced (the close is seen while the connection is
        # idle), the rest back to back
        sleep 0.2 if $i <= 3;
        my $r = final(send_req($user), 8);
        $codes{ $r ? $r->code : 0 }++;
        $pids{ $r->header('x-worker-pid') // 0 } = 1 if $r;
    }
    is($codes{200} // 0, 40, "$what closing after every answer: 40 requests, 40 200s")
        or diag(join ' ', map { "$_ x$codes{$_}" } sort keys %codes);
    is(scalar(keys %pids), 1, '... from one process (it closes connections, it does not exit)')
        if $user eq 'close' && ($ENV{SIP_TEST_ENGINES} // 1) == 1;
    unlike($t->log_since($mark), qr/before END_REQUEST|cannot connect/, '... no request lost, none logged');
    like($t->log_since($mark), qr/sip-fcgi: \S+ closes its connections after answering/,
         '... the closes after each answer noticed and logged');
}

ok($t->options_ok, "the engine still answers");
kill "TERM", $ext;
waitpid($ext, 0);
$ext = 0;
$t->stop;
done_testing;
