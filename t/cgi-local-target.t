#!/usr/bin/perl
# A script that forwards to a user of this same server (issue 11 item 3):
# CGI-PROXY-REQUEST sip:carol@<us> is looked up in the location service
# here, not sent to ourselves over the network: carol's devices get the
# INVITE once, with one Record-Route of ours, and the caller's credentials
# are not spent twice; a user with no binding gives the script a 480, one
# never registered a 404.
use strict;
use warnings;
use Test::More;
use SipCgiTest qw(parse_msg);
use SipDigest qw(digest_challenge digest_credentials digest_server);

my $realm = 'local.test';
my %pw = (alice => 'wonderland', carol => 'caroline', dave => 'davepw');

my $t = SipCgiTest->new(digest_server(realm => $realm, users => \%pw));
my $port = $t->sip_port;
my $us = "127.0.0.1:$port";
my $phone1 = $t->peer(name => 'carol1');
my $phone2 = $t->peer(name => 'carol2');

# carol registers two devices (digest, as a phone would)
sub register {
    my ($user, @contacts) = @_;
    my $uri = "sip:$us";
    my %a = (method => 'REGISTER', uri => $uri, to => "<sip:$user\@$us>", from => "<sip:$user\@$us>;tag=r1",
             call_id => "reg-$user\@test", headers => [ map { (Contact => "<$_>") } @contacts ]);
    my @x = $t->transact('udp', %a, cseq => 1);
    my $c = digest_challenge($x[-1], 'www-authenticate') or return 0;
    @x = $t->transact('udp', %a, cseq => 2,
                      headers => [ (map { (Contact => "<$_>") } @contacts),
                                   Authorization => digest_credentials(challenge => $c, user => $user,
                                                    password => $pw{$user}, method => 'REGISTER', uri => $uri) ]);
    return @x && $x[-1]->code == 200;
}
ok(register('carol', $phone1->uri('carol'), $phone2->uri('carol')), 'carol registers two devices');
ok(register('dave', $phone1->uri('dave')), 'dave registers ...');
{   # ... and unregisters again: known, but no binding now
    my $uri = "sip:$us";
    my %a = (method => 'REGISTER', uri => $uri, to => "<sip:dave\@$us>", from => "<sip:dave\@$us>;tag=r2",
             call_id => "reg-dave2\@test");
    my @x = $t->transact('udp', %a, cseq => 1, headers => [ Contact => '*', Expires => 0 ]);
    my $c = digest_challenge($x[-1], 'www-authenticate');
    @x = $t->transact('udp', %a, cseq => 2, headers => [ Contact => '*', Expires => 0,
         Authorization => digest_credentials(challenge => $c, user => 'dave', password => 'davepw',
                                             method => 'REGISTER', uri => $uri) ]);
    is(@x && $x[-1]->code, 200, '... dave removes his binding');
}

$t->cgi_script('fwd@127.0.0.1', <<"SH");
printf 'CGI-PROXY-REQUEST sip:carol\@$us SIP/2.0\\n\\n'
SH
$t->cgi_script('nobody@127.0.0.1', <<"SH");
if [ -n "\$REQUEST_METHOD" ]; then
    printf 'CGI-PROXY-REQUEST sip:dave\@$us SIP/2.0\\n\\nCGI-AGAIN yes SIP/2.0\\n\\n'
else
    printf 'SIP/2.0 %s Seen\\nX-Script-Saw: %s\\n\\n' "\$RESPONSE_STATUS" "\$RESPONSE_STATUS"
fi
SH
$t->cgi_script('ghost@127.0.0.1', <<"SH");
if [ -n "\$REQUEST_METHOD" ]; then
    printf 'CGI-PROXY-REQUEST sip:ghost\@$us SIP/2.0\\n\\nCGI-AGAIN yes SIP/2.0\\n\\n'
else
    printf 'SIP/2.0 %s Seen\\nX-Script-Saw: %s\\n\\n' "\$RESPONSE_STATUS" "\$RESPONSE_STATUS"
fi
SH

# the caller authenticates once
my $uac = $t->peer(name => 'alice');
my $target = $t->local_uri('fwd');
my $inv = $uac->invite(uri => $target);
my $r = $uac->final_for($inv, 3);
is($r && $r->code, 401, 'INVITE to the forwarding script -> 401');
$uac->ack($inv, $r) if $r;
my $c = digest_challenge($r, 'www-authenticate');
my $mark = $t->log_mark;
$inv = $uac->invite(uri => $target, headers => [ Authorization => digest_credentials(challenge => $c, user => 'alice',
                    password => 'wonderland', method => 'INVITE', uri => $target) ]);
my $cid = $uac->call_id($inv);
my $f1 = $phone1->expect(method => 'INVITE', call_id => $cid, timeout => 3);
my $f2 = $phone2->expect(method => 'INVITE', call_id => $cid, timeout => 3);
ok($f1 && $f2, 'both of carol\'s devices get the INVITE');
is($f1 && $f1->uri, $phone1->uri('carol'), '... at the registered contact');
my @rr = $f1 ? $f1->header_elems('record-route') : ();
is(scalar(@rr), 1, '... with exactly one Record-Route of ours') or diag(join "\n", @rr);
my @vias = $f1 ? $f1->header_elems('via') : ();
is(scalar(@vias), 2, '... and one Via of ours above the caller\'s (no trip through ourselves)');
ok(!grep({ /replayed nonce-count|sip auth: / } $t->log_since($mark)), 'no second authentication of the caller happened');
$phone2->reply($f2, 486) if $f2;
$phone1->reply($f1, 180) if $f1;
my $ok = $f1 ? $phone1->reply($f1, 200, body => "v=0\r\n", content_type => 'application/sdp') : undef;
my $fin = $uac->final_for($inv, 3);
is($fin && $fin->code, 200, 'the caller gets carol\'s 200');
ok($phone2->expect(method => 'ACK', call_id => $cid, timeout => 3), 'the busy device\'s 486 is ACKed');

# the BYE along the recorded route is not challenged and reaches carol
if ($fin) {
    $uac->ack($inv, $fin);
    ok($phone1->expect(method => 'ACK', call_id => $cid, timeout => 3), 'the ACK reaches carol');
    my ($rt) = $fin->header_elems('record-route');
    my ($contact) = ($fin->header('contact') // '') =~ /<([^>]+)>/;
    my $bye = $t->sip_request(method => 'BYE', uri => $contact, sock => $uac->sock, call_id => $cid,
                              from => parse_msg($inv)->header('from'), to => $fin->header('to'), cseq => 3,
                              headers => [ Route => $rt ]);
    $uac->send($bye);
    my $b = $phone1->expect(method => 'BYE', call_id => $cid, timeout => 3);
    ok($b, 'the caller\'s BYE reaches carol without a challenge');
    $phone1->reply($b, 200) if $b;
    my $bfin = $uac->expect(call_id => $cid, cseq_method => 'BYE', final => 1, timeout => 3);
    is($bfin && $bfin->code, 200, '... and its 200 comes back');
}

# users of ours with no binding: the script hears 480 / 404
for my $case ([ 'nobody', 480, 'unregistered user' ], [ 'ghost', 404, 'user never registered' ]) {
    my ($name, $code, $what) = @$case;
    my $u = $t->local_uri($name);
    my $i = $uac->invite(uri => $u);
    my $ch = digest_challenge($uac->final_for($i, 3), 'www-authenticate');
    $i = $uac->invite(uri => $u, headers => [ Authorization => digest_credentials(challenge => $ch, user => 'alice',
                      password => 'wonderland', method => 'INVITE', uri => $u) ]);
    my $f = $uac->final_for($i, 5);
    is($f && $f->header('x-script-saw'), $code, "$what: the script is run with a local $code");
}
$t->stop;

# SipMaxBranches bounds the fork to a user of ours as it does the registrar's
{
    my $u = SipCgiTest->new(vhost_conf => 'SipMaxBranches 1');
    my $us2 = '127.0.0.1:' . $u->sip_port;
    my ($d1, $d2) = ($u->peer(name => 'dev1'), $u->peer(name => 'dev2'));
    my @x = $u->transact('udp', method => 'REGISTER', uri => "sip:$us2", to => "<sip:erin\@$us2>",
                         from => "<sip:erin\@$us2>;tag=r3",
                         headers => [ Contact => '<' . $d1->uri('erin') . '>;q=0.9',
                                      Contact => '<' . $d2->uri('erin') . '>;q=0.1' ]);
    is(@x && $x[-1]->code, 200, 'erin registers two devices (no SipAuth here)');
    $u->cgi_script('fwd1@127.0.0.1', "printf 'CGI-PROXY-REQUEST sip:erin\@$us2 SIP/2.0\\n\\n'\n");
    my $caller = $u->peer(name => 'caller');
    my $inv = $caller->invite(uri => $u->local_uri('fwd1'));
    my $cid = $caller->call_id($inv);
    my $f1 = $d1->expect(method => 'INVITE', call_id => $cid, timeout => 3);
    ok($f1, 'SipMaxBranches 1: the device with the higher q gets the INVITE');
    ok(!$d2->expect(method => 'INVITE', call_id => $cid, timeout => 1), '... the other does not');
    $d1->reply($f1, 486) if $f1;
    my $fin = $caller->final_for($inv, 3);
    is($fin && $fin->code, 486, '... and its answer reaches the caller');
    $caller->ack($inv, $fin) if $fin;
    $u->stop;
}
done_testing;
