#!/usr/bin/perl
# The URI-list service (sip_explode_run.c, sip_proxy_send_new) with
# targets given as names, resolved by RFC 3263 without blocking (issue
# 17): a target's first SRV host answers 503 and the request goes to the
# second one with a new branch (RFC 3263 §4.3); a target whose domain has
# no record ends as 404 in the explosion's log line.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use SipExplodeTest qw(resource_lists parse_msg);
use SipDNS;
use Time::HiRes qw(time sleep);

my $dns = SipDNS->new(zone => '');
my $t = SipExplodeTest->new(consent => "sip:bill\@ex.test *\nsip:x\@none.test *\n",
                            conf => ['SipDNSServer ' . $dns->addr, 'SipDNSTimeout 1']);
my $p1 = $t->peer(name => 'one');
my $p2 = $t->peer(name => 'two');
my ($port1, $port2) = ($p1->port, $p2->port);
$dns->set_zone(<<"Z");
\$ORIGIN test.
test.               60 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 30
_sip._udp.ex.test.  60 IN SRV 10 10 $port1 one.ex.test.
_sip._udp.ex.test.  60 IN SRV 20 10 $port2 two.ex.test.
one.ex.test.        60 IN A 127.0.0.1
two.ex.test.        60 IN A 127.0.0.1
Z

my $mark = $t->log_mark;
my $res = $t->explode(build => { list => resource_lists(entries => ['sip:bill@ex.test',
                                                                    'sip:x@none.test']) });
is($res->{final} && $res->{final}->code, 200, 'EXPLODE to names: 200');
$t->serve([$p1, $p2], secs => 3, code => sub { $_[0] == $p1 ? 503 : 200 });
my @r1 = $t->requests($p1);
my @r2 = $t->requests($p2);
is(scalar @r1, 1, 'the first SRV host of ex.test got the MESSAGE');
is(scalar @r2, 1, 'after its 503 the second one got it');
is($r2[0] && $r2[0]->uri, 'sip:bill@ex.test', '... Request-URI = the target');
isnt($r1[0] && $r1[0]->header_param('via', 'branch'), $r2[0] && $r2[0]->header_param('via', 'branch'),
     '... with a new branch id');
ok($t->wait_log($mark, qr/sip explode: .*sip:bill\@ex\.test=200, sip:x\@none\.test=404/, 5),
   'the explosion log line: 200 for the failed-over target, 404 for the name without records')
    or diag($t->log_since($mark));
like($t->log_since($mark), qr/request of ours not sent: cannot resolve none\.test .*404/,
     'the unresolved target is logged');
# the negative answer is cached now: known at once, told the same way
$mark = $t->log_mark;
$res = $t->explode(build => { list => resource_lists(entries => ['sip:x@none.test']) });
is($res->{final} && $res->{final}->code, 200, 'EXPLODE to the same name again: 200');
ok($t->wait_log($mark, qr/sip explode: .*sip:x\@none\.test=404/, 5),
   'from the cache: 404 in the log line too') or diag($t->log_since($mark));
$dns->stop;
done_testing;
