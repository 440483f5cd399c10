# t/lib/SipDNS.pm itself: the test DNS server the DNS tests rely on answers
# what its zone says, counts queries, and obeys its modes.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time);
use lib 't/lib';
use SipDNS;

my $dns = SipDNS->new(zone => <<'Z');
$ORIGIN example.test.
@         60 IN SOA ns hostmaster 1 3600 600 86400 30
@         60 IN NAPTR 10 50 "s" "SIP+D2U" "" _sip._udp.example.test.
_sip._udp 60 IN SRV 10 60 5070 a
a         60 IN A 127.0.0.1
a         60 IN AAAA ::1
1.0.0.127.in-addr.arpa. 60 IN PTR a.example.test.
Z
ok($dns->port > 0, 'started on port ' . $dns->port);

my $r = $dns->ask('_sip._udp.example.test', 'SRV');
is($r->[0], 'RCODE NOERROR', 'SRV answered');
like($r->[1] // '', qr/SRV\s+10 60 5070 a\.example\.test\./, 'SRV record') or diag explain $r;
$r = $dns->ask('example.test', 'NAPTR', tcp => 1);
like($r->[1] // '', qr/NAPTR\s+10 50 "s" "SIP\+D2U" "" _sip\._udp\.example\.test\./, 'NAPTR over TCP');
$r = $dns->ask('1.0.0.127.in-addr.arpa', 'PTR');
like($r->[1] // '', qr/PTR\s+a\.example\.test\./, 'PTR');
$r = $dns->ask('nope.example.test', 'A');
is($r->[0], 'RCODE NXDOMAIN', 'unknown name: NXDOMAIN');
$r = $dns->ask('a.example.test', 'SRV');
is_deeply($r, ['RCODE NOERROR'], 'known name, other type: NODATA');

is($dns->queries('_sip._udp.example.test', 'SRV'), 1, 'one SRV query counted');
is($dns->queries(undef, undef), 5, 'five queries in all');

$dns->set_zone("a.example.test. 5 IN A 127.0.0.2\n");
$r = $dns->ask('a.example.test', 'A');
like($r->[1] // '', qr/A\s+127\.0\.0\.2/, 'zone replaced while running');

$dns->set_mode('silent');
my $t0 = time;
$r = $dns->ask('a.example.test', 'A', timeout => 1);
ok(!defined $r, 'silent: no answer');
$dns->set_mode('slow', 1);
$t0 = time;
$r = $dns->ask('a.example.test', 'A', timeout => 3);
my $dt = time - $t0;
ok(defined $r && $dt >= 0.9, sprintf('slow: answered after %.2f s', $dt));
$dns->clear_log;
is($dns->queries, 0, 'log cleared');
$dns->stop;
done_testing;
