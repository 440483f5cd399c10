#!/usr/bin/perl
# Requests to registered users (RFC 3261 §10, §16.5/16.6): a SIPp UAC calls
# sip:bob@127.0.0.1:SIPPORT through mod_sip after bob's SIPp UAS registered
# its contact (raw REGISTER).
#   SipMode proxy (default): the call INVITE/180/200/ACK/BYE/200 completes
#     through the proxy (Record-Route followed), over UDP and TCP; two
#     bindings with equal q ring in parallel (486 + 200 -> the UAC gets 200);
#     different q are tried one after the other, best q first.
#   SipMode redirect: 302 with one Contact per binding, nothing proxied.
#   Never registered -> 404, registered then removed -> 480.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use SipTest qw(free_port rand_token);
use SipRegTest;

SipRegTest::sipp_present() or do { done_testing; exit 1 };

# Register $contact for $user with its own Call-ID; the 200 or undef.
sub reg {
    my ($t, $user, $contact, %o) = @_;
    my $r = $t->register(user => $user, contacts => [ $contact ], expires => $o{expires} // 600,
                         call_id => $o{call_id});
    is($r && $r->code, 200, "REGISTER $user -> $contact: 200") or diag($t->_log_tail);
    return $r;
}

sub first_line_diag { my $m = shift; return $m ? $m->start_line : 'none' }

# ======================================================================= proxy
my $t = SipRegTest->new;
my $port = $t->sip_port;

# ---- one UAS registered: the call goes through, over UDP and over TCP
for my $tr (qw(u1 t1)) {
    my $TR = $tr eq 't1' ? 'TCP' : 'UDP';
    my $user = $tr eq 'u1' ? 'bob' : 'bob-tcp';
    my $uport = free_port();
    my $contact = "sip:$user\@127.0.0.1:$uport" . ($tr eq 't1' ? ';transport=tcp' : '');
    my $uas = $t->rsipp_start(name => "uas-$tr", sf => 'reg-uas-call.xml', port => $uport,
                              transport => $tr, m => 1, d => 200);
    reg($t, $user, "<$contact>");
    my $uac = $t->rsipp_start(name => "uac-$tr", sf => 'reg-uac-call.xml', transport => $tr, m => 1,
                              service => $user, remote => "127.0.0.1:$port");
    my $t0 = time;
    $t->rsipp_ok($uac, label => "$TR: UAC call to sip:$user\@127.0.0.1:SIPPORT");
    $t->rsipp_ok($uas, label => "$TR: registered UAS");
    note(sprintf "%s call: %.1fs", $TR, time - $t0);

    my ($inv) = SipRegTest::rsipp_msgs($uas, dir => 'received', method => 'INVITE');
    is($inv && $inv->uri, $contact, "$TR: INVITE at the UAS has the registered contact as Request-URI");
    like($inv ? $inv->header('to') // '' : '', qr/^<sip:\Q$user\E\@127\.0\.0\.1:$port>$/,
         "$TR: To is still the address-of-record");
    is($inv && $inv->header('max-forwards'), '69', "$TR: Max-Forwards decremented");
    my @via = $inv ? $inv->header_elems('via') : ();
    ok(@via == 2 && $via[0] =~ m{^SIP/2\.0/$TR 127\.0\.0\.1:$port;branch=z9hG4bK}, "$TR: the proxy's Via on top of the UAC's")
        or diag(join "\n", @via);
    # the transport is recorded for TCP (in-dialog requests keep it)
    my $rr_re = qr/^<sip:127\.0\.0\.1:$port@{[ $TR eq 'TCP' ? ';transport=tcp' : '' ]};lr;ftag=[^;>]+;rs=[0-9a-f]{16}>$/;
    like(join(',', $inv ? $inv->headers('record-route') : ()), $rr_re, "$TR: Record-Route of the proxy");
    for my $m (qw(ACK BYE)) {
        my ($r) = SipRegTest::rsipp_msgs($uas, dir => 'received', method => $m);
        ok($r && ($r->header_elems('via'))[0] =~ m{127\.0\.0\.1:$port;}, "$TR: $m reached the UAS through the proxy")
            or diag($r ? $r->head : 'no ' . $m);
    }
    my @got = SipRegTest::rsipp_msgs($uac, dir => 'received', cseq_method => 'INVITE');
    ok((grep { $_->code == 100 } @got), "$TR: UAC got 100 Trying");
    ok((grep { $_->code == 180 } @got), "$TR: UAC got the UAS's 180");
    my ($ok200) = grep { $_->code == 200 } @got;
    like(join(',', $ok200 ? $ok200->headers('record-route') : ()), $rr_re,
         "$TR: UAC's 200 carries the Record-Route");
    my ($ack) = SipRegTest::rsipp_msgs($uac, dir => 'sent', method => 'ACK');
    is($ack && $ack->uri, "sip:callee\@127.0.0.1:$uport;transport=$TR", "$TR: UAC's ACK went to the UAS Contact");
}

# ---- two bindings with equal q: both ring, one 486, the other 200 -> 200
{
    my $user = 'fork';
    my ($p1, $p2) = (free_port(), free_port());
    my $busy = $t->rsipp_start(name => 'fork-busy', sf => 'reg-uas-486.xml', port => $p1, m => 1, d => 500);
    my $ans  = $t->rsipp_start(name => 'fork-ans',  sf => 'reg-uas-call.xml', port => $p2, m => 1, d => 1500);
    reg($t, $user, "<sip:busy\@127.0.0.1:$p1>;q=0.7");
    my $r = reg($t, $user, "<sip:answer\@127.0.0.1:$p2>;q=0.7");
    is(scalar(() = $r ? $r->headers('contact') : ()), 2, 'fork: two bindings listed');
    my $uac = $t->rsipp_start(name => 'fork-uac', sf => 'reg-uac-call.xml', m => 1,
                              service => $user, remote => "127.0.0.1:$port");
    $t->rsipp_ok($uac, label => 'fork: UAC call');
    $t->rsipp_ok($busy, label => 'fork: UAS answering 486');
    $t->rsipp_ok($ans, label => 'fork: UAS answering 200');
    my ($i1) = SipRegTest::rsipp_msgs($busy, dir => 'received', method => 'INVITE', full => 1);
    my ($i2) = SipRegTest::rsipp_msgs($ans,  dir => 'received', method => 'INVITE', full => 1);
    my ($b486) = SipRegTest::rsipp_msgs($busy, dir => 'sent', code => 486, full => 1);
    ok($i1 && $i2, 'fork: both UASs received the INVITE');
    ok($i1 && $i2 && abs($i1->{time} - $i2->{time}) < 0.4, 'fork: in parallel (INVITEs within 0.4 s of each other)')
        or diag(sprintf 'INVITE times: %s / %s', map { $_ ? sprintf('%.3f', $_->{time}) : 'none' } $i1, $i2);
    ok($i2 && $b486 && $i2->{time} < $b486->{time}, 'fork: the second INVITE arrived before the first UAS answered 486');
    is($i1 && $i1->{msg}->uri, "sip:busy\@127.0.0.1:$p1", 'fork: Request-URI at UAS 1 is its contact');
    is($i2 && $i2->{msg}->uri, "sip:answer\@127.0.0.1:$p2", 'fork: Request-URI at UAS 2 is its contact');
    my @codes = map { $_->code } grep { $_->is_final } SipRegTest::rsipp_msgs($uac, dir => 'received', cseq_method => 'INVITE');
    is($codes[0], 200, 'fork: the UAC got 200 as the final response');
    ok(!(grep { $_ == 486 } @codes), 'fork: the 486 was not forwarded to the UAC') or diag("codes: @codes");
}

# ---- different q: one after the other, best q first (486 then 200)
{
    my $user = 'seq';
    my ($p1, $p2) = (free_port(), free_port());
    my $busy = $t->rsipp_start(name => 'seq-busy', sf => 'reg-uas-486.xml', port => $p1, m => 1, d => 300);
    my $ans  = $t->rsipp_start(name => 'seq-ans',  sf => 'reg-uas-call.xml', port => $p2, m => 1, d => 200);
    reg($t, $user, "<sip:answer\@127.0.0.1:$p2>;q=0.5");
    reg($t, $user, "<sip:busy\@127.0.0.1:$p1>;q=1.0");
    my $uac = $t->rsipp_start(name => 'seq-uac', sf => 'reg-uac-call.xml', m => 1,
                              service => $user, remote => "127.0.0.1:$port");
    $t->rsipp_ok($uac, label => 'sequential: UAC call');
    $t->rsipp_ok($busy, label => 'sequential: UAS q=1.0 answering 486');
    $t->rsipp_ok($ans, label => 'sequential: UAS q=0.5 answering 200');
    my ($i1) = SipRegTest::rsipp_msgs($busy, dir => 'received', method => 'INVITE', full => 1);
    my ($i2) = SipRegTest::rsipp_msgs($ans, dir => 'received', method => 'INVITE', full => 1);
    my ($b486) = SipRegTest::rsipp_msgs($busy, dir => 'sent', code => 486, full => 1);
    # sipp stamps a sent message after sendto(), so under load the receiving
    # sipp can stamp the next INVITE a few ms earlier: allow 50 ms of skew,
    # and check the gap against the busy UAS's 300 ms pause instead.
    ok($i1 && $i2 && $b486 && $i2->{time} >= $b486->{time} - 0.05 && $i2->{time} - $i1->{time} >= 0.25,
       'sequential: the q=0.5 contact got its INVITE only after the q=1.0 contact answered 486')
        or diag(sprintf "INVITE at q=1.0: %s, INVITE at q=0.5: %s, 486 from q=1.0: %s",
                map { $_ ? sprintf('%.3f', $_->{time}) : 'none' } $i1, $i2, $b486);
}

# ---- never registered -> 404; registered then removed -> 480
{
    my $uac = $t->rsipp_start(name => 'fail-404', sf => 'reg-uac-fail.xml', m => 1,
                              service => 'nobody' . rand_token(4), remote => "127.0.0.1:$port");
    $t->rsipp_ok($uac, label => 'never registered: UAC');
    my @f = grep { $_->is_final } SipRegTest::rsipp_msgs($uac, dir => 'received', cseq_method => 'INVITE');
    is(@f && $f[0]->code, 404, 'INVITE to a never registered user -> 404');

    my $cid = rand_token(12) . '@gone';
    reg($t, 'gone', '<sip:gone@127.0.0.1:5999>', call_id => $cid);
    my $r = $t->register(user => 'gone', call_id => $cid, cseq => 2, contacts => [ '<sip:gone@127.0.0.1:5999>;expires=0' ]);
    is($r && $r->code, 200, 'binding removed (expires=0) -> 200');
    $uac = $t->rsipp_start(name => 'fail-480', sf => 'reg-uac-fail.xml', m => 1,
                           service => 'gone', remote => "127.0.0.1:$port");
    $t->rsipp_ok($uac, label => 'registered then removed: UAC');
    @f = grep { $_->is_final } SipRegTest::rsipp_msgs($uac, dir => 'received', cseq_method => 'INVITE');
    is(@f && $f[0]->code, 480, 'INVITE to a user whose binding was removed -> 480');

    reg($t, 'gone2', '<sip:gone2@127.0.0.1:5998>');
    $r = $t->register(user => 'gone2', contacts => [ '*' ], expires => 0);
    is($r && $r->code, 200, 'Contact: * with Expires: 0 -> 200');
    $r = $t->request_to('gone2', method => 'INVITE');
    is($r && $r->code, 480, 'INVITE to a user whose bindings were removed by * -> 480');
}

ok($t->options_ok('udp') && $t->options_ok('tcp'), 'proxy server still answers OPTIONS');
$t->dump_log_on_failure;
$t->stop;

# ==================================================================== redirect
my $t2 = SipRegTest->new(vhost_conf => 'SipMode redirect');
$port = $t2->sip_port;
{
    my $sentinel = $t2->udp_socket;          # stands for the UAS: must get nothing
    my $sp = $sentinel->sockport;
    my $p2 = free_port();
    reg($t2, 'carol', "<sip:carol\@127.0.0.1:$sp>;q=0.7", expires => 600);
    reg($t2, 'carol', "<sip:carol2\@127.0.0.1:$p2;transport=tcp>", expires => 300);
    for my $tr (qw(u1 t1)) {
        my $TR = $tr eq 't1' ? 'TCP' : 'UDP';
        my $uac = $t2->rsipp_start(name => "redir-$tr", sf => 'reg-uac-302.xml', transport => $tr, m => 1,
                                   service => 'carol', remote => "127.0.0.1:$port");
        $t2->rsipp_ok($uac, label => "redirect $TR: UAC");
        my @f = grep { $_->is_final } SipRegTest::rsipp_msgs($uac, dir => 'received', cseq_method => 'INVITE');
        my $r = $f[0];
        is($r && $r->code, 302, "redirect $TR: 302");
        is($r && $r->reason, 'Moved Temporarily', "redirect $TR: reason Moved Temporarily");
        my @lines = $r ? $r->headers('contact') : ();
        is(scalar(@lines), 2, "redirect $TR: one Contact header per binding") or diag(join "\n", @lines);
        my @bad = grep { !m{^<sip:[^<>]+>;expires=\d+;q=(?:1|0\.\d*[1-9])$} } @lines;
        ok(!@bad, "redirect $TR: each Contact is <uri>;expires=N;q=Q") or diag(join "\n", @bad);
        SipRegTest::bindings_are({ SipRegTest::binding_map($r) },
                                 { "sip:carol\@127.0.0.1:$sp" => [ 580, 600, '0.7' ],
                                   "sip:carol2\@127.0.0.1:$p2;transport=tcp" => [ 280, 300, '1' ] },
                                 "redirect $TR: the 302 lists both bindings with expires and q", $r);
    }
    my @got = $t2->udp_collect($sentinel, 0.3);
    is(scalar(@got), 0, 'redirect: nothing was sent to the registered contact');
    my $r = $t2->request_to('nobody' . rand_token(4), method => 'INVITE');
    is($r && $r->code, 404, 'redirect mode: never registered user -> 404');
    my $cid = rand_token(12) . '@d';
    reg($t2, 'dan', '<sip:dan@127.0.0.1:5997>', call_id => $cid);
    $t2->register(user => 'dan', call_id => $cid, cseq => 2, contacts => [ '<sip:dan@127.0.0.1:5997>' ], expires => 0);
    $r = $t2->request_to('dan', method => 'INVITE');
    is($r && $r->code, 480, 'redirect mode: registered then removed -> 480');
}
$t2->dump_log_on_failure;
$t2->stop;

done_testing;
