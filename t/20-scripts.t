#!/usr/bin/perl
# Script selection (user@host, default script, SipDefaultScript, 404,
# non-executable) and relaying of script output (486, 180 + 200 with body).
use strict;
use warnings;
use Test::More;
use SipTest qw(parse_msg);

my $sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
my $sdplen = length $sdp;

sub tag_script {
    my ($name) = @_;
    return "#!/bin/sh\nprintf 'SIP/2.0 200 OK\\r\\nX-Script: $name\\r\\n\\r\\n'\n";
}

my %scripts = (
    'alice@127.0.0.1' => tag_script('alice'),
    'default.cgi'     => tag_script('default'),
    'noexec@127.0.0.1' => { mode => 0644, text =>
        "#!/bin/sh\necho run >> \@VAR\@/noexec.marker\nprintf 'SIP/2.0 200 OK\\n\\n'\n" },
    'busy@127.0.0.1'  => "#!/bin/sh\nprintf 'SIP/2.0 486 Busy Here\\n\\n'\n",
    'ring@127.0.0.1'  => "#!/bin/sh\n"
        . "printf 'SIP/2.0 180 Ringing\\n\\n'\n"
        . "printf 'SIP/2.0 200 OK\\nContent-Type: application/sdp\\nContact: <sip:ring\@127.0.0.1:\@SIPPORT\@>\\nContent-Length: $sdplen\\n\\n'\n"
        . "printf '%s' '$sdp'\n",
    'crlf@127.0.0.1'  => "#!/bin/sh\nprintf 'SIP/2.0 202 Accepted\\r\\nX-Script: crlf\\r\\nContent-Type: text/plain\\r\\nContent-Length: 5\\r\\n\\r\\nhello'\n",
    'tagged@127.0.0.1' => "#!/bin/sh\nprintf 'SIP/2.0 200 OK\\nTo: <sip:tagged\@127.0.0.1:\@SIPPORT\@>;tag=scripttag123\\n\\n'\n",
);

my $t = SipTest->new(scripts => \%scripts);
my $port = $t->sip_port;

sub run1 {
    my ($tr, %a) = @_;
    my @r = $t->transact($tr, method => 'MESSAGE', sock => ($tr eq 'udp' ? $t->udp_socket : undef), %a);
    return @r ? $r[-1] : undef;
}

# ---- selection
for my $tr (qw(udp tcp)) {
    my $m = run1($tr, uri => "sip:alice\@127.0.0.1:$port");
    is($m && $m->code, 200, "$tr: alice\@127.0.0.1 script answers");
    is($m && $m->header('x-script'), 'alice', "$tr: sip:alice\@127.0.0.1:PORT runs file alice\@127.0.0.1");

    $m = run1($tr, uri => 'sip:alice@127.0.0.1');
    is($m && $m->header('x-script'), 'alice', "$tr: sip:alice\@127.0.0.1 (no port) runs alice\@127.0.0.1");

    $m = run1($tr, uri => "sip:alice\@127.0.0.1:$port;user=ip");
    is($m && $m->header('x-script'), 'alice', "$tr: port and URI parameters ignored (;user=ip)");
    # another port is another server: not ours to answer (SipProxyOutside Off)
    $m = run1($tr, uri => 'sip:alice@127.0.0.1:5070');
    is($m && $m->code, 404, "$tr: Request-URI for another address:port -> 404 (not proxied)");

    $m = run1($tr, uri => "sip:%61lice\@127.0.0.1:$port;transport=$tr");
    is($m && $m->header('x-script'), 'alice', "$tr: user part is %-unescaped (%61lice)");

    $m = run1($tr, uri => "sip:bob\@127.0.0.1:$port");
    is($m && $m->code, 200, "$tr: unknown user answered by default.cgi");
    is($m && $m->header('x-script'), 'default', "$tr: default.cgi runs when user\@host is absent");

    $m = run1($tr, uri => "sip:noexec\@127.0.0.1:$port");
    ok($m && ($m->code == 403 || $m->code == 404), "$tr: non-executable script -> 403 or 404")
        or diag('got ' . ($m ? $m->start_line : 'nothing'));
    ok(!-e $t->var . '/noexec.marker', "$tr: non-executable script was not run");
}

# ---- script output relayed: 486 to INVITE
for my $tr (qw(udp tcp)) {
    my $s = $tr eq 'udp' ? $t->udp_socket : $t->tcp_connect;
    my $req = $t->sip_request(method => 'INVITE', transport => uc $tr, sock => $s,
                              uri => "sip:busy\@127.0.0.1:$port", content_type => 'application/sdp',
                              body => $sdp);
    my @r = $tr eq 'udp' ? $t->udp_req($req, 5, sock => $s) : $t->tcp_request($req, 5, sock => $s);
    my $m = $r[-1];
    is($m && $m->code, 486, "$tr: busy script -> 486");
    is($m && $m->reason, 'Busy Here', "$tr: reason phrase relayed");
    $t->check_mirrored($req, $m, "$tr 486", src_port => $s->sockport) if $m;
    if ($m) {
        my $ack = $t->ack_for($req, $m);
        $tr eq 'udp' ? $t->udp_send($ack, sock => $s) : $t->send_raw($s, $ack);
    }
}

# ---- 180 then 200 with SDP body
for my $tr (qw(udp tcp)) {
    my $s = $tr eq 'udp' ? $t->udp_socket : $t->tcp_connect;
    my $req = $t->sip_request(method => 'INVITE', transport => uc $tr, sock => $s,
                              uri => "sip:ring\@127.0.0.1:$port", content_type => 'application/sdp',
                              body => $sdp);
    my @r = $tr eq 'udp' ? $t->udp_req($req, 5, sock => $s) : $t->tcp_request($req, 5, sock => $s);
    my @codes = map { $_->code } @r;
    my @non100 = grep { $_->code != 100 } @r;
    is_deeply([ map { $_->code } @non100 ], [ 180, 200 ], "$tr: ring script -> 180 then 200")
        or diag("got: @codes");
    my ($p180) = grep { $_->code == 180 } @r;
    my ($f200) = grep { $_->code == 200 } @r;
    $t->check_mirrored($req, $p180, "$tr 180", src_port => $s->sockport) if $p180;
    $t->check_mirrored($req, $f200, "$tr 200", src_port => $s->sockport) if $f200;
    if ($f200) {
        is($f200->body, $sdp, "$tr: 200 body intact");
        is($f200->header('content-length'), $sdplen, "$tr: Content-Length $sdplen");
        is($f200->header('content-type'), 'application/sdp', "$tr: Content-Type relayed");
        is($f200->to_tag, $p180 && $p180->to_tag, "$tr: 180 and 200 carry the same To tag");
        my $ack = $t->ack_for($req, $f200, new_branch => 1);
        $tr eq 'udp' ? $t->udp_send($ack, sock => $s) : $t->send_raw($s, $ack);
    }
}

# ---- CRLF output, script-provided To tag kept
for my $tr (qw(udp tcp)) {
    my $m = run1($tr, uri => "sip:crlf\@127.0.0.1:$port");
    is($m && $m->code, 202, "$tr: CRLF script -> 202");
    is($m && $m->body, 'hello', "$tr: CRLF script body");
    is($m && $m->header('x-script'), 'crlf', "$tr: extra header relayed");

    $m = run1($tr, uri => "sip:tagged\@127.0.0.1:$port");
    is($m && $m->header('to'), "<sip:tagged\@127.0.0.1:$port>;tag=scripttag123",
       "$tr: To with tag from the script is kept as is");
}

$t->dump_log_on_failure;
$t->stop;

# ---- SipDefaultScript
my $t2 = SipTest->new(
    vhost_conf => 'SipDefaultScript other.cgi',
    scripts => { 'other.cgi' => tag_script('other'), 'default.cgi' => tag_script('default') });
$port = $t2->sip_port;
$t = $t2;
for my $tr (qw(udp tcp)) {
    my $m = run1($tr, uri => "sip:bob\@127.0.0.1:$port");
    is($m && $m->header('x-script'), 'other', "$tr: SipDefaultScript other.cgi is used instead of default.cgi");
}
$t2->remove_script('other.cgi');
for my $tr (qw(udp tcp)) {
    my $m = run1($tr, uri => "sip:bob\@127.0.0.1:$port");
    is($m && $m->code, 404, "$tr: configured default script missing -> 404 (default.cgi not used)");
    $m = run1($tr, method => 'OPTIONS', uri => "sip:bob\@127.0.0.1:$port");
    is($m && $m->code, 200, "$tr: OPTIONS with no script -> built-in 200");
    ok($m && !defined $m->header('x-script'), "$tr: OPTIONS answered by the server, not a script");
}
$t2->dump_log_on_failure;
$t2->stop;
done_testing;
