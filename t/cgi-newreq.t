#!/usr/bin/perl
# RFC 3050 conformance: new requests written by the script (§3.1, §4,
# §5.6.2.1, §5.11.2; digest 3.4.6, whose syntax RFC 3050 leaves open):
# a SIP request line starts a new request; the script gives To, From,
# Call-ID and CSeq, the server adds Via, Max-Forwards (if missing) and
# Content-Length and strips CGI-* headers; CGI-Request-Token works for its
# responses; the server never ACKs a 2xx to it (R88).  Also R61, R22.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use SipCgiTest qw(parse_msg rand_token);

my $t = SipCgiTest->new;
my $port = $t->sip_port;
my $uas1 = $t->peer(name => 'uas1');
my $uas2 = $t->peer(name => 'uas2');

# ---- a new MESSAGE next to the script's own 180, with a request token
{
    my $ncid = 'note-' . rand_token(8) . '@127.0.0.1';
    my $nuri = $uas1->uri('note');
    $t->cgi_script('nr@127.0.0.1', <<"SH");
if [ -n "\$REQUEST_METHOD" ]; then
    printf 'SIP/2.0 180 Ringing\\n\\n'
    printf 'MESSAGE $nuri SIP/2.0\\nTo: <$nuri>\\nFrom: <sip:nr\@127.0.0.1>;tag=nrtag\\nCall-ID: $ncid\\nCSeq: 7 MESSAGE\\nCGI-Request-Token: note1\\nCGI-Foo: bar\\nContent-Type: text/plain\\nContent-Length: 5\\n\\nhello'
    printf 'CGI-AGAIN yes SIP/2.0\\n\\n'
else
    printf 'SIP/2.0 486 Busy Here\\nX-Seen: %s/%s\\n\\n' "\$RESPONSE_STATUS" "\$REQUEST_TOKEN"
fi
SH
    my $uac = $t->peer(name => 'uac-nr');
    my $inv = $uac->invite(uri => $t->local_uri('nr'));
    my $cid = $uac->call_id($inv);
    my $p = $uac->expect(call_id => $cid, code => 180);
    ok($p, 'new request next to a status line: the 180 reaches the caller');
    my $m = $uas1->expect(method => 'MESSAGE', call_id => $ncid);
    ok($m, 'new request: the MESSAGE is sent');
    is($m && $m->uri, $nuri, 'new request: Request-URI as written');
    my @v = $m ? $m->header_elems('via') : ();
    ok(@v == 1 && $v[0] =~ m{^SIP/2\.0/UDP 127\.0\.0\.1:$port;branch=z9hG4bK\S+}, 'new request: the server added its Via (and only it)')
        or diag(join "\n", @v);
    is($m && $m->header('max-forwards'), '70', 'new request: Max-Forwards: 70 added');
    is($m && $m->header('to'), "<$nuri>", 'new request: To as written');
    is($m && $m->header('from'), '<sip:nr@127.0.0.1>;tag=nrtag', 'new request: From as written');
    is($m && $m->header('cseq'), '7 MESSAGE', 'new request: CSeq as written');
    is($m && $m->body, 'hello', 'new request: body');
    is($m && $m->header('content-length'), '5', 'new request: Content-Length');
    ok($m && !(grep { $_->[0] =~ /^cgi-/i } $m->header_list), 'R61: no CGI-* header in the new request');
    $uas1->reply($m, 202) if $m;
    my $fin = $uac->final_for($inv);
    is($fin && $fin->code, 486, 'new request: its response ran the (armed) script, which answered the caller');
    is($fin && $fin->header('x-seen'), '202/note1', 'R22: response to the new request: RESPONSE_STATUS=202, REQUEST_TOKEN=note1');
    $uac->ack($inv, $fin) if $fin;
}

# ---- only a new request: the default action still happens (digest 3.6)
{
    my $nuri = $uas1->uri('note2');
    my $ncid = 'note2-' . rand_token(8) . '@127.0.0.1';
    $t->cgi_script('nronly@127.0.0.1', "printf 'MESSAGE $nuri SIP/2.0\\nTo: <$nuri>\\nFrom: <sip:nronly\@127.0.0.1>;tag=x\\nCall-ID: $ncid\\nCSeq: 1 MESSAGE\\nMax-Forwards: 10\\n\\n'");
    my $uac = $t->peer(name => 'uac-nronly');
    my $inv = $uac->invite(uri => $t->local_uri('nronly'));
    my $fin = $uac->final_for($inv);
    is($fin && $fin->code, 404, 'a new request alone is no response/proxy/forward action: default action (404) for the INVITE');
    $uac->ack($inv, $fin) if $fin;
    my $m = $uas1->expect(method => 'MESSAGE', call_id => $ncid);
    ok($m, '... and the new request is sent');
    is($m && $m->header('max-forwards'), '10', 'new request: the script\'s Max-Forwards is kept');
    is(scalar(my @mf = $m ? $m->headers('max-forwards') : ()), 1, 'new request: one Max-Forwards');
    $uas1->reply($m, 200) if $m;
}

# ---- responses to a new request of an unarmed script are dropped
{
    my $nuri = $uas1->uri('note3');
    my $ncid = 'note3-' . rand_token(8) . '@127.0.0.1';
    my $target = $uas2->uri('callee');
    $t->cgi_script('nrdrop@127.0.0.1', "printf 'MESSAGE $nuri SIP/2.0\\nTo: <$nuri>\\nFrom: <sip:nrdrop\@127.0.0.1>;tag=y\\nCall-ID: $ncid\\nCSeq: 1 MESSAGE\\n\\nCGI-PROXY-REQUEST $target SIP/2.0\\n\\n'");
    my $uac = $t->peer(name => 'uac-nrdrop');
    my $inv = $uac->invite(uri => $t->local_uri('nrdrop'));
    my $cid = $uac->call_id($inv);
    my $m = $uas1->expect(method => 'MESSAGE', call_id => $ncid);
    $uas1->reply($m, 488, reason => 'Not Acceptable Here', headers => [ 'X-From' => 'new-request' ]) if $m;
    my $f = $uas2->expect(method => 'INVITE', call_id => $cid);
    my $early = $uac->expect(call_id => $cid, final => 1, timeout => 0.5);
    ok(!$early, 'the final response to a new request does not go upstream (not armed: dropped)')
        or diag($early->raw);
    $uas2->reply($f, 486) if $f;
    my $fin = $uac->final_for($inv);
    is($fin && $fin->code, 486, '... the caller gets the proxied branch\'s answer');
    $uac->ack($inv, $fin) if $fin;
    is($t->nruns('nrdrop@127.0.0.1', call_id => $cid), 1, '... and the script was not run for it');
}

# ---- R88: a 2xx to a script's INVITE is not ACKed by the server; the script ACKs
{
    my $nuri = $uas2->uri('third');
    my $ncid = 'third-' . rand_token(8) . '@127.0.0.1';
    $t->cgi_script('nrinv@127.0.0.1', <<"SH");
if [ -n "\$REQUEST_METHOD" ]; then
    printf 'SIP/2.0 183 Session Progress\\n\\n'
    printf 'INVITE $nuri SIP/2.0\\nTo: <$nuri>\\nFrom: <sip:nrinv\@127.0.0.1:$port>;tag=uac3\\nCall-ID: $ncid\\nCSeq: 1 INVITE\\nContact: <sip:nrinv\@127.0.0.1:$port>\\nCGI-Request-Token: call2\\n\\n'
    printf 'CGI-AGAIN yes SIP/2.0\\n\\n'
elif [ "\$REQUEST_TOKEN" = call2 ] && [ "\$RESPONSE_STATUS" = 200 ]; then
    printf 'ACK $nuri SIP/2.0\\nTo: %s\\nFrom: %s\\nCall-ID: %s\\nCSeq: 1 ACK\\nX-Script-Ack: yes\\n\\n' "\$SIP_TO" "\$SIP_FROM" "\$SIP_CALL_ID"
    printf 'SIP/2.0 486 Busy Here\\nX-Third-Party: answered\\n\\n'
else
    printf 'CGI-AGAIN yes SIP/2.0\\n\\n'
fi
SH
    my $uac = $t->peer(name => 'uac-nrinv');
    my $inv = $uac->invite(uri => $t->local_uri('nrinv'));
    my $cid = $uac->call_id($inv);
    my $i2 = $uas2->expect(method => 'INVITE', call_id => $ncid);
    ok($i2, 'R88: the script\'s new INVITE is sent');
    ok($i2 && !defined $i2->header('cgi-request-token'), 'R61: without its CGI-Request-Token');
    is($i2 && $i2->header('max-forwards'), '70', 'new request: Max-Forwards: 70 added');
    is($i2 && $i2->body, '', 'new request without a body: sent without a body');
    is($i2 && $i2->header('content-length'), '0', 'new request without a body: Content-Length: 0');
    $uas2->reply($i2, 200) if $i2;
    my $fin = $uac->final_for($inv);
    is($fin && $fin->code, 486, 'R88: the 200 to the script\'s INVITE ran the script (REQUEST_TOKEN=call2)');
    is($fin && $fin->header('x-third-party'), 'answered', 'R88: ... which then answered the caller');
    $uac->ack($inv, $fin) if $fin;
    my @acks = $uas2->all(wait => 2.5, method => 'ACK', call_id => $ncid);
    ok(!(grep { !defined $_->header('x-script-ack') } @acks), 'R88: the server did not ACK the 2xx to the script\'s INVITE itself');
    is(scalar(@acks), 1, 'R88: exactly one ACK reached the UAS: the one the script wrote (not retransmitted)')
        or diag(join "\n--\n", map { $_->raw } @acks);
    my $a = $acks[0];
    like($a && $a->header('to') // '', qr/;tag=/, 'R88: the script\'s ACK carries the To tag of the 200');
    like($a && $a->header('cseq') // '', qr/^1 ACK$/, 'R88: CSeq 1 ACK');
    my @p = $uac->all(call_id => $cid, code => 183);
    ok(@p, 'the 183 written next to the new INVITE reached the caller');
    my @runs = $t->runs('nrinv@127.0.0.1', call_id => $ncid);
    is($runs[0] && $runs[0]{env}{REQUEST_TOKEN}, 'call2', 'R22: REQUEST_TOKEN=call2 on the 200 to the new INVITE');
}

# ---- a new request without To/From/Call-ID/CSeq is not sent, and logged
{
    my $nuri = $uas1->uri('broken');
    $t->cgi_script('nrbad@127.0.0.1', "printf 'MESSAGE $nuri SIP/2.0\\nX-Only: this\\n\\nSIP/2.0 200 OK\\n\\n'");
    my $mark = $t->log_mark;
    my $uac = $t->peer(name => 'uac-nrbad');
    my $r = $uac->request(method => 'MESSAGE', uri => $t->local_uri('nrbad'));
    my $fin = $uac->expect(call_id => $uac->call_id($r), final => 1);
    is($fin && $fin->code, 200, 'incomplete new request: the other actions are still carried out');
    ok(!$uas1->all(wait => 1, filter => sub { ($_[0]->header('x-only') // '') eq 'this' }),
       'incomplete new request (no To/From/Call-ID/CSeq): not sent');
    ok($t->wait_log($mark, qr/nrbad\@127\.0\.0\.1.*new request|new request.*not valid/i), 'incomplete new request: logged');
}

$t->dump_log_on_failure;
$t->stop;
done_testing;
