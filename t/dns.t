#!/usr/bin/perl
# The engine's asynchronous resolver (sip_dns.c, docs/dns.md) seen from
# outside, against the test DNS server of t/lib/SipDNS.pm: REMOTE_HOST from
# PTR records with HostnameLookups On and Double (double-reverse), Require
# host allowing and denying, the cache (a second request asks nothing), a
# DNS server that never answers while OPTIONS from elsewhere keep being
# answered at once, a slow one under load (20 senders answered together),
# the log line of a timeout, the mod_status counters, and
# bad directive values refused by apache2 -t.  Peers are 127.0.0.2-29 (not
# in /etc/hosts, so their names come from DNS).
use strict;
use warnings;
use Test::More;
use IO::Socket::INET;
use Socket qw(SOL_SOCKET SO_RCVBUF);
use Time::HiRes qw(time sleep);
use SipTest qw(parse_msg);
use SipDNS;

my $MODDIR = $SipTest::MODDIR;

my $dns = SipDNS->new(zone => <<'Z');
$ORIGIN dns.test.
@       300 IN SOA ns hostmaster 1 3600 600 86400 60
good    300 IN A 127.0.0.2
liar    300 IN A 127.0.0.99
$ORIGIN 0.0.127.in-addr.arpa.
2       300 IN PTR good.dns.test.
3       300 IN PTR liar.dns.test.
6       300 IN PTR good.dns.test.
Z

my $script = "#!/bin/sh\nprintf 'SIP/2.0 200 OK\\nX-Host: %s\\n\\n' \"\${REMOTE_HOST:-none}\"\n";
my $status_conf = "LoadModule status_module $MODDIR/mod_status.so\n"
                . "<Location /server-status>\n    SetHandler server-status\n</Location>\n";

sub sock_from {
    my ($ip) = @_;
    my $s = IO::Socket::INET->new(LocalAddr => $ip, LocalPort => 0, Proto => 'udp')
        or die "udp socket on $ip: $!";
    setsockopt($s, SOL_SOCKET, SO_RCVBUF, 1 << 20);
    return $s;
}

# the final response to a MESSAGE to USER from address IP, and its time
sub ask {
    my ($t, $ip, $user, $timeout) = @_;
    my $t0 = time;
    my @r = $t->transact('udp', method => 'MESSAGE', sock => sock_from($ip),
                         uri => "sip:$user\@127.0.0.1:" . $t->sip_port, timeout => $timeout // 5);
    my ($f) = grep { $_->code >= 200 } @r;
    return ($f, time - $t0);
}
sub host_of { my ($f) = @_; return $f ? ($f->header('x-host') // 'no header') : 'no answer' }

sub stats {
    my ($t) = @_;
    return $t->sip_counters;
}

# ---- HostnameLookups On: the PTR name, not verified
{
    my $t = SipTest->new(
        server_conf => "SipDNSServer " . $dns->addr . "\nSipDNSTimeout 1\nSipDNSTries 1\n$status_conf",
        vhost_conf  => 'HostnameLookups On',
        scripts     => { 'default.cgi' => $script },
    );
    $dns->clear_log;
    my ($f) = ask($t, '127.0.0.2', 'anyone');
    is(host_of($f), 'good.dns.test', 'On: REMOTE_HOST from the PTR record');
    is($dns->queries('2.0.0.127.in-addr.arpa', 'PTR'), 1, 'On: one PTR query');
    is($dns->queries('good.dns.test', 'A'), 0, 'On: no forward check');
    ($f) = ask($t, '127.0.0.2', 'anyone');
    is(host_of($f), 'good.dns.test', 'On: the same name again');
    is($dns->queries('2.0.0.127.in-addr.arpa', 'PTR'), 1, 'On: ... from the cache (no new query)');
    ($f) = ask($t, '127.0.0.3', 'anyone');
    is(host_of($f), 'liar.dns.test', 'On: a PTR name whose A record differs is still given');
    ($f) = ask($t, '127.0.0.4', 'anyone');
    is(host_of($f), 'none', 'On: no PTR record, no REMOTE_HOST');

    my $s = stats($t);
    cmp_ok($s->{SipDnsQueries} // 0, '>=', 3, 'mod_status: SipDnsQueries counts the queries');
    cmp_ok($s->{SipDnsCacheHits} // 0, '>=', 1, 'mod_status: SipDnsCacheHits counts the cached answer');
    is($s->{SipDnsTimeouts}, 0, 'mod_status: SipDnsTimeouts 0 so far');

    # a silent DNS server: the request waiting for its name does not hold
    # up others (127.0.0.1 is named by /etc/hosts)
    $dns->set_mode('silent');
    my $slow = sock_from('127.0.0.5');
    my $mark = $t->log_mark;
    my $raw = $t->sip_request(method => 'MESSAGE', uri => "sip:anyone\@127.0.0.1:" . $t->sip_port,
                              transport => 'UDP', sock => $slow);
    my $t0 = time;
    $t->udp_send($raw, sock => $slow);
    my ($worst, $n) = (0, 0);
    while (time - $t0 < 0.8) {
        my $o0 = time;
        my @r = $t->transact('udp', method => 'OPTIONS', sock => $t->udp_socket,
                             uri => "sip:nobody\@127.0.0.1:" . $t->sip_port, timeout => 2);
        my $dt = time - $o0;
        $worst = $dt if $dt > $worst;
        $n++ if @r && $r[-1]->code == 200;
    }
    cmp_ok($n, '>=', 5, "silent DNS: $n OPTIONS answered meanwhile");
    cmp_ok($worst, '<', 0.3, sprintf('silent DNS: the slowest OPTIONS took %.3f s', $worst));
    my $final;
    while (!$final && time - $t0 < 5) {
        my $d = $t->udp_recv($slow, 5 - (time - $t0)) // last;
        my $m = parse_msg($d);
        $final = $m if $m->is_response && $m->code >= 200;
    }
    my $waited = time - $t0;
    ok($final && $final->code == 200, 'silent DNS: the waiting request is answered after the timeout');
    is(host_of($final), 'none', '... without REMOTE_HOST');
    cmp_ok($waited, '>=', 0.9, sprintf('... after SipDNSTimeout (%.2f s)', $waited));
    ok($t->wait_log($mark, qr/sip dns: PTR 5\.0\.0\.127\.in-addr\.arpa: timeout/, 3),
       'silent DNS: one log line names the query, its type and the reason');
    $s = stats($t);
    cmp_ok($s->{SipDnsTimeouts} // 0, '>=', 1, 'mod_status: SipDnsTimeouts counts it');

    # a slow DNS server (0.5 s per answer) under load: 20 senders whose
    # names are not cached wait in parallel, not one after the other
    $dns->set_mode('slow', 0.5);
    my @socks = map { sock_from("127.0.0.$_") } 10 .. 29;
    $t0 = time;
    for my $s (@socks) {
        $t->udp_send($t->sip_request(method => 'MESSAGE', transport => 'UDP', sock => $s,
                                     uri => "sip:anyone\@127.0.0.1:" . $t->sip_port), sock => $s);
    }
    my $o0 = time;
    my @o = $t->transact('udp', method => 'OPTIONS', sock => $t->udp_socket,
                         uri => "sip:nobody\@127.0.0.1:" . $t->sip_port, timeout => 2);
    my $odt = time - $o0;
    my $answered = 0;
    for my $s (@socks) {
        while (defined(my $d = $t->udp_recv($s, 5 - (time - $t0)))) {
            my $m = parse_msg($d);
            if ($m->is_response && $m->code >= 200) { $answered++; last }
        }
    }
    my $all = time - $t0;
    is($answered, 20, 'slow DNS: 20 senders with uncached names all answered');
    cmp_ok($all, '<', 3, sprintf('... in %.2f s (one after the other would take 10 s)', $all));
    cmp_ok($odt, '<', 0.3, sprintf('... while an OPTIONS from a named peer took %.3f s', $odt));
    cmp_ok($dns->queries(undef, 'PTR'), '>=', 20, '... each name asked of the DNS server');
    $dns->set_mode('normal');
    $t->stop;
}

# ---- HostnameLookups Double and Require host
{
    my $loc = sub { my ($u, @b) = @_; join("\n", "<Location \"/$u\@127.0.0.1\">", @b, '</Location>') };
    my $t = SipTest->new(
        server_conf => join("\n", "SipDNSServer " . $dns->addr, 'SipDNSTimeout 1',
                            "LoadModule authz_host_module $MODDIR/mod_authz_host.so",
                            $loc->('goodonly', 'Require host good.dns.test'),
                            $loc->('domain', 'Require host .dns.test'), ''),
        vhost_conf  => 'HostnameLookups Double',
        scripts     => { 'default.cgi' => $script },
    );
    $dns->clear_log;
    my ($f) = ask($t, '127.0.0.2', 'anyone');
    is(host_of($f), 'good.dns.test', 'Double: REMOTE_HOST when the A record gives the address back');
    is($dns->queries('good.dns.test', 'A'), 1, 'Double: the forward lookup was made');
    ($f) = ask($t, '127.0.0.3', 'anyone');
    is(host_of($f), 'none', 'Double: no REMOTE_HOST when the name does not map back');
    ($f) = ask($t, '127.0.0.2', 'goodonly');
    is($f && $f->code, 200, 'Require host good.dns.test: that host is let in');
    ($f) = ask($t, '127.0.0.2', 'domain');
    is($f && $f->code, 200, 'Require host .dns.test: a host of the domain is let in');
    ($f) = ask($t, '127.0.0.3', 'domain');
    is($f && $f->code, 403, 'Require host .dns.test: a PTR name that does not verify -> 403');
    ($f) = ask($t, '127.0.0.4', 'goodonly');
    is($f && $f->code, 403, 'Require host: no name at all -> 403');
    ($f) = ask($t, '127.0.0.6', 'goodonly');
    is($f && $f->code, 403, 'Require host: a PTR to a name whose A is another address -> 403');
    my $q = $dns->queries;
    ($f) = ask($t, '127.0.0.2', 'goodonly');
    is($f && $f->code, 200, 'Require host again ...');
    is($dns->queries, $q, '... answered from the cache');
    $t->stop;
}

# ---- bad values refused at configuration test
sub config_test {
    my ($conf) = @_;
    my $t = SipTest->new(start => 0, server_conf => $conf);
    $t->write_conf;
    my ($rc, $out) = $t->_run_apache('-t');
    $t->cleanup_dir;
    return ($rc, $out);
}
for my $bad (['SipDNSServer dns.example.com', qr/SipDNSServer.*ip\[:port\]/],
             ['SipDNSServer 127.0.0.1:70000', qr/SipDNSServer/],
             ['SipDNSTimeout 0', qr/SipDNSTimeout needs/],
             ['SipDNSTimeout 2s', qr/SipDNSTimeout needs/],
             ['SipDNSTries 11', qr/SipDNSTries needs/],
             ['SipDNSCacheSize -3', qr/SipDNSCacheSize needs/],
             ["<VirtualHost 127.0.0.1:9>\nSipDNSTries 2\n</VirtualHost>", qr/SipDNSTries.*cannot occur within/]) {
    my ($rc, $out) = config_test($bad->[0]);
    (my $name = $bad->[0]) =~ s/\n.*//s;
    isnt($rc, 0, "apache2 -t refuses '$name'");
    like($out, $bad->[1], '... saying why') or diag($out);
}
my ($rc, $out) = config_test("SipDNSServer 127.0.0.1:5353,[::1]\nSipDNSTimeout 500ms\nSipDNSTries 3\nSipDNSCacheSize 0");
is($rc, 0, 'good values accepted') or diag($out);

$dns->stop;
done_testing;
