#!/usr/bin/perl
# No open relay (issue 10): requests that would leave this server follow
# one policy, SipProxyOutside Off|On|Authenticated (the default), however
# they try: a Request-URI for another host, a Route preloaded with our
# address, an unknown method, an ACK or CANCEL that no transaction
# explains, an in-dialog request on a forged route set; over UDP and TCP,
# with and without credentials.  A victim listens on UDP and TCP ports the
# test owns and must receive nothing that was not allowed.
use strict;
use warnings;
use Test::More;
use IO::Socket::INET;
use IO::Select;
use Time::HiRes qw(sleep time);
use SipVictim;
use SipTest qw(parse_msg wait_until rand_token);
use SipDigest qw(digest_challenge digest_credentials digest_server);

my $realm = 'relay.test';

# ---- the victim: whatever reaches it was relayed
my $victim = SipVictim->new;
my $vport = $victim->port;

my $us;     # filled per server
sub req {
    my ($t, $tr, %a) = @_;
    my @r = $t->transact($tr, timeout => 2, %a);
    return @r ? $r[-1] : undef;
}

# ---- 1. the default policy without any authentication configured
my $t = SipTest->new();
my $port = $t->sip_port;
$us = "127.0.0.1:$port";
my $victim_tcp = "sip:svc\@127.0.0.1:$vport;transport=tcp";
my $victim_udp = "sip:svc\@127.0.0.1:$vport";

for my $tr (qw(udp tcp)) {
    my $r = req($t, $tr, method => 'GET', uri => $victim_tcp, body => "GET / HTTP/1.0\r\n\r\n",
                headers => [ Route => "<sip:$us;lr>" ]);
    is($r && $r->code, 501, "$tr: unknown method GET with a Route to us -> 501 Not Implemented");
    like($r && $r->header('allow') // '', qr/\bINVITE\b.*\bMESSAGE\b/, "$tr: ... with Allow");
    is($victim->got(0.5), '', "$tr: ... the victim got nothing");

    $r = req($t, $tr, method => 'INVITE', uri => $victim_udp, headers => [ Route => "<sip:$us;lr>" ],
             body => "v=0\r\n", content_type => 'application/sdp');
    is($r && $r->code, 403, "$tr: INVITE preloaded with a Route to us, for another host -> 403");
    is($victim->got(0.5), '', "$tr: ... the victim got nothing");

    $r = req($t, $tr, method => 'MESSAGE', uri => $victim_tcp, body => 'hi', content_type => 'text/plain');
    is($r && $r->code, 404, "$tr: MESSAGE for another host, no SipAuth anywhere -> 404 (Authenticated by default: nobody can relay)");
    is($victim->got(0.5), '', "$tr: ... the victim got nothing");

    $r = req($t, $tr, method => 'INVITE', uri => "sip:alice\@$us", headers => [ Route => "<sip:$us;lr>, <$victim_udp;lr>" ]);
    is($r && $r->code, 403, "$tr: INVITE for us whose Route goes on to another host -> 403");
    is($victim->got(0.5), '', "$tr: ... the victim got nothing");

    # an in-dialog request on a route set we never recorded
    $r = req($t, $tr, method => 'BYE', uri => $victim_udp, to => "<$victim_udp>;tag=x1",
             headers => [ Route => "<sip:$us;lr;ftag=abc;rs=0123456789abcdef>" ]);
    is($r && $r->code, 403, "$tr: BYE with a To tag and a forged Route of ours -> 403");
    is($victim->got(0.5), '', "$tr: ... the victim got nothing");

    # CANCEL for nothing we forwarded
    $r = req($t, $tr, method => 'CANCEL', uri => $victim_udp, headers => [ Route => "<sip:$us;lr>" ]);
    is($r && $r->code, 481, "$tr: CANCEL with a Route to us and no INVITE -> 481");
    is($victim->got(0.5), '', "$tr: ... the victim got nothing");
}

# ACK cannot be answered: it must be absorbed
for my $tr (qw(udp tcp)) {
    my $ack = $t->sip_request(method => 'ACK', uri => $victim_udp, to => "<$victim_udp>;tag=y2",
                              transport => uc $tr, headers => [ Route => "<sip:$us;lr>" ], body => 'payload');
    if ($tr eq 'udp') { $t->udp_send($ack) }
    else { my $s = $t->tcp_connect; $t->send_raw($s, $ack); }
    is($victim->got(0.8), '', "$tr: ACK with a Route to us (not one we recorded) is not relayed");
}
ok(scalar(grep { /relaying refused/ } $t->error_log), 'refusals are logged');
ok(scalar(grep { /SipProxyOutside Authenticated, and no SipAuth/ } $t->error_log), '... saying why');
$t->stop;

# ---- 2. SipAuth On: relaying for users who authenticate
$t = SipTest->new(digest_server(realm => $realm, users => { alice => 'wonderland' }));
$port = $t->sip_port;
$us = "127.0.0.1:$port";
for my $tr (qw(udp tcp)) {
    my $s = $tr eq 'tcp' ? $t->tcp_connect : $t->udp_socket;
    my $r = req($t, $tr, method => 'MESSAGE', uri => $victim_udp, sock => $s, headers => [ Route => "<sip:$us;lr>" ],
                body => 'x', content_type => 'text/plain');
    is($r && $r->code, 407, "$tr: preloaded Route, no credentials, SipAuth On -> 407");
    is($victim->got(0.3), '', "$tr: ... the victim got nothing");
    my $c = digest_challenge($r, 'proxy-authenticate');
    my $bad = digest_credentials(challenge => $c, user => 'alice', password => 'wrong', method => 'MESSAGE',
                                 uri => $victim_udp);
    $r = req($t, $tr, method => 'MESSAGE', uri => $victim_udp, sock => $s, body => 'x', content_type => 'text/plain',
             headers => [ Route => "<sip:$us;lr>", 'Proxy-Authorization' => $bad ]);
    is($r && $r->code, 407, "$tr: ... wrong password -> 407 again");
    is($victim->got(0.3), '', "$tr: ... the victim got nothing");
    my $good = digest_credentials(challenge => $c, user => 'alice', password => 'wonderland', method => 'MESSAGE',
                                  uri => $victim_udp);
    my $raw = $t->sip_request(method => 'MESSAGE', uri => $victim_udp, sock => $s, transport => uc $tr,
                              body => 'x', content_type => 'text/plain',
                              headers => [ Route => "<sip:$us;lr>", 'Proxy-Authorization' => $good ]);
    if ($tr eq 'udp') { $t->udp_send($raw, sock => $s) } else { $t->send_raw($s, $raw) }
    like($victim->got(1), qr/^MESSAGE \Q$victim_udp\E SIP\/2\.0/, "$tr: ... right password: relayed");

    # an ACK, even from an authenticated user, cannot be checked: absorbed
    my $ack = $t->sip_request(method => 'ACK', uri => $victim_udp, to => "<$victim_udp>;tag=z3", transport => uc $tr,
                              sock => $s, headers => [ Route => "<sip:$us;lr>", 'Proxy-Authorization' => $good ]);
    if ($tr eq 'udp') { $t->udp_send($ack, sock => $s) } else { $t->send_raw($s, $ack) }
    # (the relayed MESSAGE, unanswered, may still be retransmitted meanwhile)
    unlike($victim->got(0.8), qr/^ACK /m, "$tr: ACK with credentials and a Route to us is not relayed");
}
$t->stop;

# ---- 3. SipProxyOutside Off: nobody; 4. On: anyone, SipProxyMethods
$t = SipTest->new(vhost_conf => 'SipProxyOutside Off');
$port = $t->sip_port;
$us = "127.0.0.1:$port";
for my $tr (qw(udp tcp)) {
    my $r = req($t, $tr, method => 'OPTIONS', uri => $victim_udp);
    is($r && $r->code, 404, "$tr: Off: request for another host -> 404 Domain Not Served Here");
    $r = req($t, $tr, method => 'OPTIONS', uri => $victim_udp, headers => [ Route => "<sip:$us;lr>" ]);
    is($r && $r->code, 403, "$tr: Off: ... with a Route to us -> 403");
}
is($victim->got(0.5), '', 'Off: the victim got nothing');
$t->stop;

$t = SipTest->new(vhost_conf => "SipProxyOutside On\nSipProxyMethods PING");
$port = $t->sip_port;
for my $tr (qw(udp tcp)) {
    my $r = req($t, $tr, method => 'GET', uri => $victim_udp);
    is($r && $r->code, 501, "$tr: On: an unknown method is still not forwarded -> 501");
    is($victim->got(0.3), '', "$tr: ... the victim got nothing");
    my $raw = $t->sip_request(method => 'PING', uri => $victim_udp, transport => uc $tr,
                              sock => $tr eq 'tcp' ? undef : $t->udp_socket);
    if ($tr eq 'udp') { $t->udp_send($raw) } else { my $s = $t->tcp_connect; $t->send_raw($s, $raw) }
    like($victim->got(1), qr/^PING \Q$victim_udp\E SIP\/2\.0/m, "$tr: On: a method named by SipProxyMethods is forwarded");
}
$t->stop;

# ---- a configuration error is refused at startup
{
    my $bad = SipTest->new(vhost_conf => 'SipProxyOutside Sometimes', start => 0);
    $bad->write_conf;
    my ($rc, $out) = $bad->_run_apache('-t');
    isnt($rc, 0, 'SipProxyOutside Sometimes: apache2 -t fails');
    like($out // '', qr/On, Off or Authenticated/, '... saying what is allowed');
}

done_testing;
