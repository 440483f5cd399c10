#!/usr/bin/perl
# Interoperability with Net::SIP (Debian package libnet-sip-perl) as UAC
# over UDP.
use strict;
use warnings;
use Test::More;
use SipTest qw(free_port);
use Net::SIP;
use Net::SIP::Request;
use Net::SIP::Response;

my $t = SipTest->new(scripts => {
    'busy@127.0.0.1' => "#!/bin/sh\nprintf 'SIP/2.0 486 Busy Here\\n\\n'\n",
    'answer@127.0.0.1' => "#!/bin/sh\n"
        . "case \"\$REQUEST_METHOD\" in\n"
        . "INVITE) printf 'SIP/2.0 200 OK\\r\\nContact: <sip:answer\@127.0.0.1:\@SIPPORT\@>\\r\\n"
        .   "Content-Type: application/sdp\\r\\n\\r\\nv=0\\r\\no=- 1 1 IN IP4 127.0.0.1\\r\\ns=-\\r\\n"
        .   "c=IN IP4 127.0.0.1\\r\\nt=0 0\\r\\nm=audio 4000 RTP/AVP 0\\r\\n' ;;\n"
        . "*) printf 'SIP/2.0 200 OK\\r\\nX-Method: %s\\r\\n\\r\\n' \"\$REQUEST_METHOD\" ;;\n"
        . "esac\n",
});
my $port = $t->sip_port;
my $lport = free_port();

my $ua = Net::SIP::Simple->new(
    from           => 'sip:tester@127.0.0.1',
    leg            => "127.0.0.1:$lport",
    outgoing_proxy => "127.0.0.1:$port",
);
ok($ua, 'Net::SIP::Simple UA created');

# ---- INVITE -> 486
{
    my ($done, $status, %info);
    my $call = $ua->invite("sip:busy\@127.0.0.1:$port",
        cb_final => sub { ($status, undef, %info) = @_; $done = 1 });
    $ua->loop(10, \$done);
    ok($done, 'Net::SIP: INVITE to the busy script got a final response');
    is($status, 'FAIL', 'Net::SIP: call failed');
    is($info{code}, 486, 'Net::SIP: final response 486');
    is($info{packet} && $info{packet}->msg, 'Busy Here', 'Net::SIP: reason phrase') if $info{packet};
}

# ---- OPTIONS -> 200
{
    my ($code, $pkt);
    $ua->{endpoint}->new_request('OPTIONS',
        { from => 'sip:tester@127.0.0.1', to => "sip:nobody\@127.0.0.1:$port" },
        sub { my ($ep, $ctx, $errno, $c, $p) = @_; $code = $c // "errno $errno"; $pkt = $p });
    $ua->loop(5, \$code);
    is($code, 200, 'Net::SIP: OPTIONS answered 200');
    if ($pkt) {
        my @allow = $pkt->get_header('allow');
        ok((grep { /\bINVITE\b/ } @allow), 'Net::SIP: Allow lists INVITE') or diag("Allow: @allow");
    }
}

# ---- INVITE -> 200, ACK, BYE -> 200
{
    my ($done, $status, %info);
    my $call = $ua->invite("sip:answer\@127.0.0.1:$port",
        cb_final => sub { ($status, undef, %info) = @_; $done = 1 });
    $ua->loop(10, \$done);
    is($status, 'OK', 'Net::SIP: INVITE to the answering script established a call');
    my $bye;
    if ($status && $status eq 'OK') {
        $call->bye(cb_final => sub { $bye = shift // 'done' });
        $ua->loop(5, \$bye);
    }
    ok($bye && $bye ne 'FAIL', 'Net::SIP: BYE answered') or diag('bye: ' . ($bye // 'no answer'));
}

$ua->cleanup;
$t->dump_log_on_failure;
$t->stop;
done_testing;
