#!/usr/bin/perl
# RFC 3050 conformance: the CGI-PROXY-REQUEST action (§5.6.1.2) and CGI
# header fields (§5.6.2): header merge rules, body rules, CGI-Remove,
# stripping of CGI-* headers, proxying from a response-triggered run.
# A raw UDP socket plays the downstream UAS so that exactly what the server
# forwarded can be inspected.  Checklist items R53-R63 (and R87).
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use SipCgiTest qw(parse_msg);

my $sdp = "v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

my $t = SipCgiTest->new;
my $port = $t->sip_port;
my $uas = $t->peer(name => 'uas');
my $target = $uas->uri('bob');
my $n = 0;

my @orig_headers = ('Contact' => '<sip:c1@127.0.0.1:5999>', 'Contact' => '<sip:c2@127.0.0.1:5999>',
                    'Subject' => 'original subject', 'Organization' => 'Original Org',
                    'X-Keep' => 'keep me');

# Install a script printing $out (printf format) for the INVITE, send an
# INVITE with SDP and @orig_headers, return (INVITE as sent, INVITE as
# forwarded to the UAS).  The UAS answers 486, the caller ACKs.
sub proxy_case {
    my ($out, %o) = @_;
    my $name = 'px' . ++$n;
    $t->cgi_script("$name\@127.0.0.1", "printf '$out'");
    my $uac = $t->peer(name => "uac-$name");
    my $inv = $uac->invite(uri => $t->local_uri($name), content_type => 'application/sdp', body => $sdp,
                           headers => $o{headers} // \@orig_headers, %{ $o{req} || {} });
    my $fwd = $uas->expect(method => $o{method} // 'INVITE', call_id => $uac->call_id($inv));
    if ($fwd) {
        $uas->reply($fwd, $o{code} // 486);
        my $fin = $uac->final_for($inv);
        $uac->ack($inv, $fin) if $fin && $fin->code >= 300;
    } else {
        diag("$name: nothing forwarded; " . join(' | ', map { $_->start_line } $uac->all));
    }
    return (parse_msg($inv), $fwd);
}

sub names { my ($m) = @_; return $m ? map { lc $_->[0] } $m->header_list : () }

# ---- plain proxying: R53, R54, R55 (Record-Route added), R58, R59
{
    my ($inv, $fwd) = proxy_case("CGI-PROXY-REQUEST $target SIP/2.0\\n\\n");
    ok($fwd, 'R53: the INVITE was proxied');
    is($fwd && $fwd->uri, $target, 'R53: Request-URI is the CGI-PROXY-REQUEST URI');
    my @iv = $inv->header_elems('via');
    my @fv = $fwd ? $fwd->header_elems('via') : ();
    is(scalar(@fv), scalar(@iv) + 1, 'R54: one more Via than the request had');
    like($fv[0] // '', qr{^SIP/2\.0/UDP 127\.0\.0\.1:$port;branch=z9hG4bK}, 'R54: the new Via is the server\'s, on top');
    like($fv[1] // '', qr/^\Q${\ ($iv[0] =~ s{;rport}{}r)}\E/, 'R54: the caller\'s Via follows (only received/rport added)');
    is($fwd && $fwd->header('max-forwards'), '69', 'R54: Max-Forwards decremented (70 -> 69)');
    my $ftag = $inv->from_tag;
    like(join(' | ', $fwd ? $fwd->headers('record-route') : ()),
         qr/^<sip:127\.0\.0\.1:$port;lr;ftag=\Q$ftag\E;rs=[0-9a-f]{16}>$/,
         'R55: without a script Record-Route the server adds its own (signed for the dialog)');
    for my $h (qw(From To Call-ID CSeq Subject Organization X-Keep Content-Type)) {
        is($fwd && $fwd->header($h), $inv->header($h), "R58: $h kept unchanged");
    }
    is(join(' | ', $fwd ? $fwd->headers('contact') : ()), join(' | ', $inv->headers('contact')),
       'R58: both Contact lines kept, in order');
    is($fwd && $fwd->body, $sdp, 'R59: no body in the script message: the original SDP is forwarded');
    is($fwd && $fwd->header('content-length'), length($sdp), 'R59: Content-Length of the original body');
}

# ---- R53 for a non-INVITE request
{
    my ($inv, $fwd) = proxy_case("CGI-PROXY-REQUEST $target SIP/2.0\\n\\n", method => 'MESSAGE',
                                 req => { method => 'MESSAGE' }, code => 200);
    is($fwd && $fwd->method, 'MESSAGE', 'R53: a MESSAGE is proxied as well');
    is($fwd && $fwd->uri, $target, 'R53: MESSAGE Request-URI is the CGI-PROXY-REQUEST URI');
}

# ---- R55: script Max-Forwards and Record-Route
{
    my ($inv, $fwd) = proxy_case("CGI-PROXY-REQUEST $target SIP/2.0\\nMax-Forwards: 5\\nRecord-Route: <sip:rr.example.com;lr>\\n\\n");
    is($fwd && $fwd->header('max-forwards'), '5', 'R55: script Max-Forwards: 5 is sent as is (no further decrement)');
    is(scalar(my @mf = $fwd ? $fwd->headers('max-forwards') : ()), 1, 'R55: one Max-Forwards header');
    is(join(' | ', $fwd ? $fwd->headers('record-route') : ()), '<sip:rr.example.com;lr>',
       'R55: script Record-Route: the server does not add its own');
    is(scalar(my @v = $fwd ? $fwd->header_elems('via') : ()), 2, 'R54: the server still adds its Via');
}

# ---- R56: a script header replaces every original header of that name
{
    my ($inv, $fwd) = proxy_case("CGI-PROXY-REQUEST $target SIP/2.0\\nContact: <sip:script\@192.0.2.9>\\n\\n");
    is(join(' | ', $fwd ? $fwd->headers('contact') : ()), '<sip:script@192.0.2.9>',
       'R56: script Contact replaces both original Contact headers');
    is($fwd && $fwd->header('subject'), 'original subject', 'R56: other headers untouched');
    # the original written in compact form (m:)
    ($inv, $fwd) = proxy_case("CGI-PROXY-REQUEST $target SIP/2.0\\nContact: <sip:script\@192.0.2.9>\\n\\n",
                              headers => [ 'm' => '<sip:compact@127.0.0.1:5999>', 'Subject' => 's' ]);
    is(join(' | ', $fwd ? $fwd->headers('contact') : ()), '<sip:script@192.0.2.9>',
       'R56: script Contact also replaces an original compact-form m: header');
}

# ---- R57: added headers go right after the Via block
{
    my ($inv, $fwd) = proxy_case("CGI-PROXY-REQUEST $target SIP/2.0\\nSubject: new subject\\nX-New: added\\n\\n");
    my @n = names($fwd);
    my ($is) = grep { $n[$_] eq 'subject' } 0 .. $#n;
    my ($ix) = grep { $n[$_] eq 'x-new' } 0 .. $#n;
    my @before = grep { $_ ne 'via' } @n[0 .. (($is // 0) < ($ix // 0) ? ($is // 0) : ($ix // 0)) - 1];
    ok(defined $is && defined $ix && !@before, 'R57: script headers come right after the Via block')
        or diag("header order: @n");
    ok(defined $is && defined $ix && $ix == $is + 1, 'R57: script headers keep the script\'s order');
    is(join(' | ', $fwd ? $fwd->headers('subject') : ()), 'new subject', 'R56: script Subject replaces the original one');
    is($fwd && $fwd->header('x-new'), 'added', 'R57: new header X-New present');
    is($fwd && $fwd->header('organization'), 'Original Org', 'R58: Organization still there');
}

# ---- R59: Content-Length: 0 removes the body; a script body replaces it
{
    my ($inv, $fwd) = proxy_case("CGI-PROXY-REQUEST $target SIP/2.0\\nContent-Length: 0\\n\\n");
    is($fwd && $fwd->body, '', 'R59: Content-Length: 0 -> forwarded without a body');
    is($fwd && $fwd->header('content-length'), '0', 'R59: ... and Content-Length: 0');
    ($inv, $fwd) = proxy_case("CGI-PROXY-REQUEST $target SIP/2.0\\nContent-Type: text/plain\\nContent-Length: 8\\n\\nnew body");
    is($fwd && $fwd->body, 'new body', 'R59: a body in the script message replaces the original body');
    is($fwd && $fwd->header('content-type'), 'text/plain', 'R59: ... with its Content-Type');
    is($fwd && $fwd->header('content-length'), '8', 'R59: ... and Content-Length');
}

# ---- R61: no CGI-* header on the wire
{
    my ($inv, $fwd) = proxy_case("CGI-PROXY-REQUEST $target SIP/2.0\\nCGI-Request-Token: tok1\\nCGI-Foo: bar\\ncgi-lower: x\\nX-After: 1\\n\\n");
    ok($fwd, 'R61: proxied');
    my @cgi = grep { /^cgi-/ } names($fwd);
    ok($fwd && !@cgi, 'R61: no CGI-* header (CGI-Request-Token, unknown CGI-Foo, lower-case cgi-lower) in the forwarded request')
        or diag($fwd->head);
    unlike($fwd ? $fwd->raw : 'CGI-', qr/CGI-|tok1/i, 'R61: no trace of the CGI headers in the message');
    is($fwd && $fwd->header('x-after'), '1', 'R61: the SIP header after them is kept');
}

# ---- R62, R63: CGI-Remove
{
    my ($inv, $fwd) = proxy_case("CGI-PROXY-REQUEST $target SIP/2.0\\nCGI-Remove: Subject, Organization\\n\\n");
    ok($fwd && !defined $fwd->header('subject'), 'R62: CGI-Remove: Subject removes Subject');
    ok($fwd && !defined $fwd->header('organization'), 'R62: CGI-Remove: ..., Organization removes Organization');
    is($fwd && $fwd->header('x-keep'), 'keep me', 'R62: headers not listed are kept');
    is($fwd && $fwd->body, $sdp, 'R62: body kept');

    ($inv, $fwd) = proxy_case("CGI-PROXY-REQUEST $target SIP/2.0\\nCGI-Remove: X-Not-There\\n\\n");
    ok($fwd, 'R62: CGI-Remove of a header that is not there: still forwarded');
    for my $h (qw(Subject Organization X-Keep From To)) {
        is($fwd && $fwd->header($h), $inv->header($h), "R62: CGI-Remove: X-Not-There ignored, $h intact");
    }

    ($inv, $fwd) = proxy_case("CGI-PROXY-REQUEST $target SIP/2.0\\ncgi-remove: subject\\nCGI-REMOVE: X-KEEP\\n\\n");
    ok($fwd && !defined $fwd->header('subject'), 'R63: cgi-remove: subject (lower case) removes Subject');
    ok($fwd && !defined $fwd->header('x-keep'), 'R63: CGI-REMOVE: X-KEEP (upper case) removes X-Keep');
    is($fwd && $fwd->header('organization'), 'Original Org', 'R63: Organization kept');

    ($inv, $fwd) = proxy_case("CGI-PROXY-REQUEST $target SIP/2.0\\nCGI-Remove: Contact\\n\\n",
                              headers => [ 'm' => '<sip:compact@127.0.0.1:5999>', 'Subject' => 's' ]);
    ok($fwd && !$fwd->headers('contact'), 'R62: CGI-Remove: Contact also removes a compact-form m: header');
}

# ---- R60: proxying on a response-triggered run sends the initial request
{
    my $uas2 = $t->peer(name => 'uas2');
    my $t2 = $uas2->uri('carol');
    $t->cgi_script('seq@127.0.0.1', <<"SH");
if [ -n "\$REQUEST_METHOD" ]; then
    printf 'CGI-PROXY-REQUEST %s SIP/2.0\\nX-Run1: yes\\nSubject: run1 subject\\nCGI-Remove: Organization\\nMax-Forwards: 9\\nContent-Length: 0\\n\\n' '$target'
    printf 'CGI-AGAIN yes SIP/2.0\\n\\n'
else
    printf 'CGI-PROXY-REQUEST %s SIP/2.0\\n\\n' '$t2'
fi
SH
    my $uac = $t->peer(name => 'uac-seq');
    my $inv_raw = $uac->invite(uri => $t->local_uri('seq'), content_type => 'application/sdp', body => $sdp,
                               headers => \@orig_headers);
    my $inv = parse_msg($inv_raw);
    my $f1 = $uas->expect(method => 'INVITE', call_id => $inv->header('call-id'));
    ok($f1, 'R60: first branch proxied');
    is($f1 && $f1->header('x-run1'), 'yes', 'R60: (first branch has the run-1 changes)');
    $uas->reply($f1, 486) if $f1;
    my $ack = $uas->expect(method => 'ACK', call_id => $inv->header('call-id'), timeout => 3);
    ok($ack, 'R87: the server ACKed the 486 of the first branch itself');
    if ($ack && $f1) {
        is($ack->header_param('via', 'branch'), $f1->header_param('via', 'branch'), 'R87: ACK in the INVITE client transaction (same branch)');
        like($ack->header('cseq') // '', qr/^1 ACK$/, 'R87: ACK CSeq 1 ACK');
    }
    my $f2 = $uas2->expect(method => 'INVITE', call_id => $inv->header('call-id'));
    ok($f2, 'R60: the response-triggered CGI-PROXY-REQUEST sent an INVITE');
    is($f2 && $f2->uri, $t2, 'R60: to the new URI');
    is($f2 && $f2->body, $sdp, 'R60: it is the initial request: original body (not the run-1 branch\'s empty one)');
    ok($f2 && !defined $f2->header('x-run1'), 'R60: no header added by run 1');
    is($f2 && $f2->header('subject'), 'original subject', 'R60: original Subject');
    is($f2 && $f2->header('organization'), 'Original Org', 'R60: Organization (removed on branch 1) is there');
    is($f2 && $f2->header('max-forwards'), '69', 'R60: Max-Forwards of the initial request minus one');
    for my $h (qw(From To Call-ID CSeq)) {
        is($f2 && $f2->header($h), $inv->header($h), "R60: $h of the initial request");
    }
    my @v = $f2 ? $f2->header_elems('via') : ();
    is(scalar(@v), 2, 'R60: Vias: the server\'s and the caller\'s (none from the first UAS)');
    isnt(SipTest::Msg::params_of($v[0] // '')->{branch}, $f1 && $f1->header_param('via', 'branch'),
         'R60: new branch parameter for the new client transaction');
    $uas2->reply($f2, 200, body => $sdp, content_type => 'application/sdp') if $f2;
    my $fin = $uac->final_for($inv_raw);
    is($fin && $fin->code, 200, 'R60: the caller gets the 200 of the second branch (default action)');
    $uac->ack($inv_raw, $fin) if $fin;
    my $a2 = $uas2->expect(method => 'ACK', timeout => 3);
    ok($a2, 'the caller\'s ACK for the 200 reached the second UAS');
}
# ---- nothing is proxied after the final response (R52)
{
    $t->cgi_script('late@127.0.0.1', "printf 'SIP/2.0 486 Busy Here\\n\\nCGI-PROXY-REQUEST $target SIP/2.0\\n\\n'");
    my $uac = $t->peer(name => 'uac-late');
    my $inv = $uac->invite(uri => $t->local_uri('late'));
    my $fin = $uac->final_for($inv);
    is($fin && $fin->code, 486, 'R52: final response from the script');
    $uac->ack($inv, $fin) if $fin;
    ok(!$uas->all(wait => 0.5, call_id => $uac->call_id($inv)), 'R52: a CGI-PROXY-REQUEST after the final response is not carried out');
}

# ---- R70: requests for another domain never run a script; SipProxyOutside Off -> 404
{
    $t->cgi_script('default.cgi', "printf 'SIP/2.0 500 Default Script Ran\\n\\n'");
    my $uac = $t->peer(name => 'uac-foreign');
    my $inv = $uac->invite(uri => $uas->uri('foreign'));
    my $fin = $uac->final_for($inv);
    is($fin && $fin->code, 404, 'R70: SipProxyOutside Off: INVITE for another domain -> 404, not proxied');
    $uac->ack($inv, $fin) if $fin;
    ok(!$uas->all(wait => 0.3, call_id => $uac->call_id($inv)), 'R70: SipProxyOutside Off: nothing sent to the foreign URI');
    is($t->nruns('default.cgi'), 0, 'R70: no script ran for it');
}
$t->dump_log_on_failure;
$t->stop;

# ---- SipRecordRoute Off, SipProxyOutside On
my $t3 = SipCgiTest->new(vhost_conf => "SipRecordRoute Off\nSipProxyOutside On");
{
    my $uas3 = $t3->peer(name => 'uas-out');
    $t3->cgi_script('default.cgi', "printf 'SIP/2.0 500 Default Script Ran\\n\\n'");
    my $uac = $t3->peer(name => 'uac-out');
    my $inv = $uac->invite(uri => $uas3->uri('foreign'), content_type => 'application/sdp', body => $sdp);
    my $fwd = $uas3->expect(method => 'INVITE', call_id => $uac->call_id($inv));
    ok($fwd, 'R70: SipProxyOutside On: INVITE for another domain is proxied without a script (default action)');
    is($fwd && $fwd->uri, $uas3->uri('foreign'), 'R70: ... to its Request-URI');
    is($fwd && $fwd->body, $sdp, 'R70: ... unchanged body');
    $uas3->reply($fwd, 486) if $fwd;
    my $fin = $uac->final_for($inv);
    is($fin && $fin->code, 486, 'R70: the answer comes back');
    $uac->ack($inv, $fin) if $fin;
    is($t3->nruns('default.cgi'), 0, 'R70: no script ran (scripts only run for local Request-URIs)');
}
{
    my $uas3 = $t3->peer(name => 'uas3');
    $t3->cgi_script('norr@127.0.0.1', "printf 'CGI-PROXY-REQUEST " . $uas3->uri('b') . " SIP/2.0\\n\\n'");
    my $uac = $t3->peer(name => 'uac3');
    my $inv = $uac->invite(uri => $t3->local_uri('norr'));
    my $fwd = $uas3->expect(method => 'INVITE');
    ok($fwd && !$fwd->headers('record-route'), 'R55: SipRecordRoute Off: no Record-Route added');
    $uas3->reply($fwd, 486) if $fwd;
    my $fin = $uac->final_for($inv);
    $uac->ack($inv, $fin) if $fin;
}
$t3->dump_log_on_failure;
$t3->stop;
done_testing;
