#!/usr/bin/perl
# Idle TLS connections hold no httpd worker thread: the MPM child passes
# each one to the SIP engine before the handshake, and the engine keeps it
# in its poll set.  N connections (2000; SIPTEST_TLS_IDLE=10000 for the
# issue's figure, which needs a descriptor limit above that) finish their
# handshake and stay open; then /server-status shows no busy worker beyond
# the one serving it, the engine counts N TLS connections, and a new
# OPTIONS over TLS is still answered at once.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use SipTest qw(free_port wait_until);
use SipTls;

SipTls::have_tls_client() or do { fail('IO::Socket::SSL (libio-socket-ssl-perl) installed'); done_testing; exit 1 };

my $N = $ENV{SIPTEST_TLS_IDLE} || 2000;
my $tport = free_port();
my $pki;
my $t = SipTest->new(start => 0, setup => sub { $pki = SipTls::make_pki($_[0]->dir . '/pki') });
$t->{server_conf} = SipTls::modules_conf() . SipTls::status_conf()
    . "SipTcpMaxConnectionsPerIP 0\nSipTcpMaxConnections " . ($N + 100) . "\n"
    . SipTls::vhost_conf($pki, $tport, 'SipTcpIdleTimeout 600');
$t->start;
my $engine = $t->engine_pid;

sub engine_rss_kb {
    open(my $fh, '<', "/proc/$engine/status") or return 0;
    while (<$fh>) { return $1 if /^VmRSS:\s+(\d+)/ }
    return 0;
}

sub options_over_tls {
    my $s = SipTls::tls_connect($tport, $pki) or return (undef, 0);
    my $t0 = time;
    $t->send_raw($s, $t->sip_request(method => 'OPTIONS', transport => 'TLS', sock => $s,
                                     uri => "sip:nobody\@127.0.0.1:$tport"));
    my $m = $t->read_response($s, 5);
    return ($m, time - $t0);
}

my $rss0 = engine_rss_kb();
my $t0 = time;
my @conns;
for my $i (1 .. $N) {
    my $s = SipTls::tls_connect($tport, $pki, timeout => 10) or last;
    push @conns, $s;
}
my $took = time - $t0;
is(scalar @conns, $N, "$N TLS connections opened, handshakes done");
note(sprintf '%d handshakes in %.1f s', scalar @conns, $took);

my $st;
wait_until(10, sub { $st = SipTls::status($t); $st && ($st->{SipTlsConnectionsNow} // 0) >= $N }, 0.2);
cmp_ok($st && $st->{SipTlsConnectionsNow} // 0, '>=', $N, "the engine holds all $N (SipTlsConnectionsNow)");
# the request for /server-status itself is the one busy worker
cmp_ok($st && $st->{BusyWorkers} // 99, '<=', 2, "httpd busy workers stay ~0 with $N idle TLS connections")
    or diag("BusyWorkers: " . ($st && $st->{BusyWorkers} // 'none'));
my $rss1 = engine_rss_kb();
note(sprintf 'engine RSS %d kB before, %d kB with %d idle TLS connections (%.1f kB each)',
             $rss0, $rss1, $N, ($rss1 - $rss0) / ($N || 1));

my ($m, $rtt) = options_over_tls();
is($m && $m->code, 200, "a new OPTIONS over TLS is answered with $N idle connections open");
cmp_ok($rtt, '<', 1, 'and quickly') or diag("took ${rtt}s");

# a few of the idle ones still work
my $ok = 0;
for my $s (@conns[0, int($N / 2), $N - 1]) {
    next unless $s;
    $t->send_raw($s, $t->sip_request(method => 'OPTIONS', transport => 'TLS', sock => $s,
                                     uri => "sip:nobody\@127.0.0.1:$tport"));
    my $r = $t->read_response($s, 5);
    $ok++ if $r && $r->code == 200;
}
is($ok, 3, 'idle connections (first, middle, last) still answer');

close $_ for @conns;
wait_until(15, sub { $st = SipTls::status($t); $st && ($st->{SipTlsConnectionsNow} // 1) == 0 }, 0.2);
is($st && $st->{SipTlsConnectionsNow}, 0, 'all closed when the clients close');
is($t->engine_pid, $engine, 'the engine is the same process');
$t->dump_log_on_failure;
$t->stop;
done_testing;
