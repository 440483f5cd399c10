#!/usr/bin/perl
# OPTIONS the server answers itself keeps no transaction (RFC 3261 §8.2.7,
# the stateless UAS; issue 19): a retransmission is handled as a new request
# and gets a byte-identical answer, because the To tag derives from the
# request (a keyed hash of branch, sent-by, Call-ID, From tag, CSeq).
# Everything else still applies: SipAuth challenges (which stay stateful:
# their nonce is new each time), the access log, the mod_status counters,
# TCP; OPTIONS to a user's script stays stateful.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use IO::Socket::INET;
use IO::Select;
use SipTest qw(parse_msg wait_until rand_token);

my $MODDIR = $SipTest::MODDIR;
my $t = SipTest->new(
    server_conf => join("\n",
        "LoadModule status_module $MODDIR/mod_status.so",
        "LoadModule authn_core_module $MODDIR/mod_authn_core.so",
        "LoadModule authn_file_module $MODDIR/mod_authn_file.so",
        '<Location /server-status>',
        '    SetHandler server-status',
        '</Location>',
        '<Location "/locked@127.0.0.1">',
        '    SipAuth On',
        '    AuthName "sip.test"',
        '    AuthUserFile @DIR@/users.htdigest',
        '</Location>',
        ''),
    vhost_conf => join("\n",
        'LogFormat "%{Call-ID}i %{CSeq}i %>s %{To}o" optlog',
        'CustomLog @DIR@/logs/options.log optlog'),
    scripts => {
        'script@127.0.0.1' => "#!/bin/sh\nprintf 'SIP/2.0 200 OK\\nX-Script: yes\\n\\n'\n",
    },
    setup => sub {
        my $t = shift;
        open(my $fh, '>', $t->dir . '/users.htdigest') or die;
        print $fh "alice:sip.test:0123456789abcdef0123456789abcdef\n";
        close $fh;
        chmod 0644, $t->dir . '/users.htdigest';
    },
);
my $port = $t->sip_port;
my $log = $t->dir . '/logs/options.log';

sub http_status { return $t->sip_counters }

sub log_lines {
    open(my $fh, '<', $log) or return ();
    return <$fh>;
}

# Send raw text on $s and return the raw datagrams that come back within
# $wait seconds.
sub send_collect {
    my ($s, $raw, $wait) = @_;
    $t->udp_send($raw, sock => $s);
    return map { $_->[1] } $t->udp_collect($s, $wait // 1);
}

# ---- a retransmission gets a byte-identical answer, and no state is kept
my $before = http_status();
ok($before && defined $before->{SipTransactionsTotal}, 'mod_status shows the SIP counters');
my $s = $t->udp_socket;
my $callid = rand_token(12) . '@127.0.0.1';
my $req = $t->sip_request(method => 'OPTIONS', sock => $s, uri => "sip:nobody\@127.0.0.1:$port",
                          call_id => $callid, branch => 'z9hG4bK' . rand_token(12));
my @a = send_collect($s, $req, 1);
is(scalar(@a), 1, 'OPTIONS: one answer');
my $m1 = @a ? parse_msg($a[0]) : undef;
is($m1 && $m1->code, 200, 'OPTIONS -> 200');
ok($m1 && $m1->to_tag, 'the 200 carries a To tag');
ok($m1 && grep({ uc($_) eq 'OPTIONS' } $m1->header_elems('allow')), 'Allow as before (sip_options.c)');
like($m1 && $m1->header('accept') // '', qr{application/sdp}, 'Accept as before');
# no transaction waits out timer J: the engine holds none now
my $now = http_status();
is($now && $now->{SipTransactionsNow}, 0, 'no server transaction kept after the answer');
my @b = send_collect($s, $req, 1);
is(scalar(@b), 1, 'the retransmission (same branch) is answered once');
is($b[0], $a[0], 'the retransmission gets a byte-identical answer') or diag("first:\n$a[0]\nsecond:\n" . ($b[0] // 'none'));

# ---- different requests get different tags
my %tags = ($m1 ? ($m1->to_tag => 'first') : ());
my @variants = (
    [ 'a new branch, same Call-ID and CSeq' => (call_id => $callid, cseq => 1) ],
    [ 'the next CSeq' => (call_id => $callid, cseq => 2) ],
    [ 'another Call-ID' => () ],
    [ 'another From tag' => (call_id => $callid, from_tag => rand_token(8)) ],
);
for my $v (@variants) {
    my ($what, %args) = @$v;
    my $r = $t->sip_request(method => 'OPTIONS', sock => $s, uri => "sip:nobody\@127.0.0.1:$port", %args);
    my @x = send_collect($s, $r, 1);
    my $m = @x ? parse_msg($x[0]) : undef;
    my $tag = $m && $m->to_tag;
    ok($tag && !$tags{$tag}, "$what: a To tag of its own") or diag("tag " . ($tag // 'none'));
    $tags{$tag} = $what if $tag;
}

# ---- the counters count every answer, the retransmission included
my $after = http_status();
SKIP: {
    skip 'no mod_status counters', 2 unless $before && $after;
    is($after->{SipTransactionsTotal} - $before->{SipTransactionsTotal}, 6,
       'SipTransactionsTotal counts the 6 OPTIONS handled (the retransmission handled as new)');
    is($after->{SipResponses2xx} - $before->{SipResponses2xx}, 6, 'SipResponses2xx counts 6 answers');
}

# ---- the access log has a line per answer, with the To tag sent
ok(wait_until(5, sub { (grep { /^\Q$callid\E 1 OPTIONS 200 / } log_lines()) >= 2 }),
   'access log: one line for the request and one for its retransmission');
my @l = grep { /^\Q$callid\E 1 OPTIONS 200 / } log_lines();
like($l[0] // '', qr/;tag=\Q${\($m1 ? $m1->to_tag : 'x')}\E/, 'access log: %{To}o shows the derived tag');

# ---- SipAuth still challenges; the challenge is stateful (its retransmission
#      gets the same nonce back, not a new one)
{
    my $r = $t->sip_request(method => 'OPTIONS', sock => $s, uri => "sip:locked\@127.0.0.1:$port");
    my @x = send_collect($s, $r, 1);
    my $m = @x ? parse_msg($x[0]) : undef;
    is($m && $m->code, 401, 'OPTIONS under SipAuth On -> 401');
    ok($m && $m->header('www-authenticate'), 'the 401 carries a challenge');
    my @y = send_collect($s, $r, 1);
    is($y[0], $x[0], 'the retransmitted challenged OPTIONS gets the same 401 (kept transaction)');
}

# ---- OPTIONS to a user's script is the script's answer, kept as before
{
    my $r = $t->sip_request(method => 'OPTIONS', sock => $s, uri => "sip:script\@127.0.0.1:$port");
    my @x = $t->udp_req($r, 5, sock => $s);
    my $m = @x ? $x[-1] : undef;
    is($m && $m->code, 200, 'OPTIONS to a script -> its 200');
    is($m && $m->header('x-script'), 'yes', 'the answer is the script\'s');
    my @y = send_collect($s, $r, 1);
    is(scalar(@y), 1, 'its retransmission is answered from the transaction');
    is($y[0] && parse_msg($y[0])->to_tag, $m && $m->to_tag, 'with the same To tag');
    my $st = http_status();
    ok($st && $st->{SipTransactionsNow} >= 1, 'the script\'s transaction is kept (timer J)');
}

# ---- TCP: answered alike, the same request twice gets the same answer
{
    my $c = $t->tcp_connect;
    ok($c, 'TCP connect');
    my $r = $t->sip_request(method => 'OPTIONS', transport => 'TCP', sock => $c,
                            uri => "sip:nobody\@127.0.0.1:$port");
    $t->send_raw($c, $r);
    my $m = $t->read_response($c, 3);
    is($m && $m->code, 200, 'TCP OPTIONS -> 200');
    ok($m && $m->to_tag, 'TCP: a To tag');
    $t->send_raw($c, $r);
    my $m2 = $t->read_response($c, 3);
    is($m2 && $m2->raw, $m && $m->raw, 'TCP: the same request again gets a byte-identical answer');
}

# ---- the Vias come back as they were sent (§8.2.6.2), only the top value
# stamped (RFC 3581 rport, received): written from the received text, not
# re-serialised by libosip2 (which drops the white space around ';')
{
    my $s3 = $t->udp_socket;
    my $lp = $s3->sockport;
    my $br = 'z9hG4bK' . rand_token(10);
    my $r = $t->sip_request(method => 'OPTIONS', sock => $s3, uri => "sip:nobody\@127.0.0.1:$port",
                            via => "SIP/2.0/UDP 127.0.0.1:$lp ;branch=$br ;rport , "
                                   . 'SIP/2.0/UDP  192.0.2.9:5060 ;branch=z9hG4bKsecond',
                            headers => [Via => 'SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bKthird ;x=Y']);
    my @x = send_collect($s3, $r, 1);
    my $raw = $x[0] // '';
    like($raw, qr{^SIP/2\.0 200 }, 'OPTIONS with three Vias -> 200');
    my @vias = $raw =~ /^Via: (.*?)\r$/mg;
    is(scalar(@vias), 2, 'two Via header fields, as sent');
    is($vias[0] // '', "SIP/2.0/UDP 127.0.0.1:$lp ;branch=$br ;rport=$lp;received=127.0.0.1 , "
                       . 'SIP/2.0/UDP  192.0.2.9:5060 ;branch=z9hG4bKsecond',
       'the top Via stamped (rport, received), the rest of its field byte for byte');
    is($vias[1] // '', 'SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bKthird ;x=Y',
       'the second Via field byte for byte');
    my @y = send_collect($s3, $r, 1);
    is($y[0], $x[0], 'its retransmission gets a byte-identical answer');
}

ok(!$t->crash_lines, 'no crash in the error log');
done_testing();
