#!/usr/bin/perl
# SIP-CGI next hops given as names, resolved by RFC 3263 without
# blocking (issue 17): a script's new request (RFC 3050 §3.1) and its
# CGI-PROXY-REQUEST to a domain with SRV records, failover to the second
# SRV target on a 503, and a name with no record (404 to the script).
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use SipCgiTest qw(parse_msg rand_token);
use SipDNS;

my $dns = SipDNS->new(zone => '');
my $t = SipCgiTest->new(server_conf => "SipDNSServer " . $dns->addr . "\nSipDNSTimeout 1\n");
my $port = $t->sip_port;
my $uas1 = $t->peer(name => 'uas1');
my $uas2 = $t->peer(name => 'uas2');
my ($p1, $p2) = ($uas1->port, $uas2->port);
$dns->set_zone(<<"Z");
\$ORIGIN test.
test.                 60 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 30
_sip._udp.notes.test. 60 IN SRV 10 10 $p1 one.notes.test.
_sip._udp.calls.test. 60 IN SRV 10 10 $p1 one.calls.test.
_sip._udp.calls.test. 60 IN SRV 20 10 $p2 two.calls.test.
one.notes.test.       60 IN A 127.0.0.1
one.calls.test.       60 IN A 127.0.0.1
two.calls.test.       60 IN A 127.0.0.1
Z

# ---- a new request from the script to a name: sent to the SRV target
{
    my $ncid = 'dnote-' . rand_token(8) . '@127.0.0.1';
    $t->cgi_script('nr@127.0.0.1', <<"SH");
if [ -n "\$REQUEST_METHOD" ]; then
    printf 'SIP/2.0 180 Ringing\\n\\n'
    printf 'MESSAGE sip:note\@notes.test SIP/2.0\\nTo: <sip:note\@notes.test>\\nFrom: <sip:nr\@127.0.0.1>;tag=nrtag\\nCall-ID: $ncid\\nCSeq: 7 MESSAGE\\nCGI-Request-Token: note1\\nContent-Type: text/plain\\nContent-Length: 5\\n\\nhello'
    printf 'CGI-AGAIN yes SIP/2.0\\n\\n'
else
    printf 'SIP/2.0 486 Busy Here\\nX-Seen: %s/%s\\n\\n' "\$RESPONSE_STATUS" "\$REQUEST_TOKEN"
fi
SH
    my $uac = $t->peer(name => 'uac-nr');
    my $inv = $uac->invite(uri => $t->local_uri('nr'));
    my $m = $uas1->expect(method => 'MESSAGE', call_id => $ncid);
    ok($m, 'new request to sip:note@notes.test: sent to its SRV target');
    is($m && $m->uri, 'sip:note@notes.test', '... the Request-URI as written');
    $uas1->reply($m, 202) if $m;
    my $fin = $uac->final_for($inv);
    is($fin && $fin->header('x-seen'), '202/note1', 'its 202 reached the script');
    $uac->ack($inv, $fin) if $fin;
}

# ---- CGI-PROXY-REQUEST to a name: the first SRV target's 503 makes the
#      proxy try the second (RFC 3263 §4.3)
{
    $t->cgi_script('px@127.0.0.1', <<"SH");
if [ -n "\$REQUEST_METHOD" ]; then
    printf 'CGI-PROXY-REQUEST sip:bob\@calls.test SIP/2.0\\n\\n'
fi
SH
    my $uac = $t->peer(name => 'uac-px');
    my $inv = $uac->invite(uri => $t->local_uri('px'));
    my $cid = $uac->call_id($inv);
    my $a = $uas1->expect(method => 'INVITE', call_id => $cid);
    ok($a, 'CGI-PROXY-REQUEST sip:bob@calls.test: the priority 10 target got the INVITE');
    $uas1->reply($a, 503) if $a;
    my $b = $uas2->expect(method => 'INVITE', call_id => $cid);
    ok($b, '... after its 503 the priority 20 target got it');
    is($b && $b->uri, 'sip:bob@calls.test', '... with the same Request-URI');
    $uas2->reply($b, 486) if $b;
    my $fin = $uac->final_for($inv);
    is($fin && $fin->code, 486, 'the caller gets the second target\'s 486');
    $uac->ack($inv, $fin) if $fin;
}

# ---- a new request to a name without records: 404 made up for the script
{
    $t->cgi_script('nx@127.0.0.1', <<"SH");
if [ -n "\$REQUEST_METHOD" ]; then
    printf 'SIP/2.0 180 Ringing\\n\\n'
    printf 'MESSAGE sip:x\@nowhere.test SIP/2.0\\nTo: <sip:x\@nowhere.test>\\nFrom: <sip:nx\@127.0.0.1>;tag=nxtag\\nCall-ID: nx-$$\@127.0.0.1\\nCSeq: 1 MESSAGE\\nCGI-Request-Token: nx1\\nContent-Length: 0\\n\\n'
    printf 'CGI-AGAIN yes SIP/2.0\\n\\n'
else
    printf 'SIP/2.0 480 Temporarily Unavailable\\nX-Seen: %s/%s\\n\\n' "\$RESPONSE_STATUS" "\$REQUEST_TOKEN"
fi
SH
    my $mark = $t->log_mark;
    my $uac = $t->peer(name => 'uac-nx');
    my $inv = $uac->invite(uri => $t->local_uri('nx'));
    my $fin = $uac->final_for($inv, 8);
    is($fin && $fin->header('x-seen'), '404/nx1', 'a name with no record: the script hears 404');
    like($t->log_since($mark), qr/cannot resolve sip:x\@nowhere\.test .*404 Not Found/,
         '... and the log says why');
    $uac->ack($inv, $fin) if $fin;
    # again: the negative answer is cached now, known at once
    my $inv2 = $uac->invite(uri => $t->local_uri('nx'));
    my $fin2 = $uac->final_for($inv2, 8);
    is($fin2 && $fin2->header('x-seen'), '404/nx1', '... also when the answer comes from the cache');
    $uac->ack($inv2, $fin2) if $fin2;
}

$dns->stop;
done_testing;
