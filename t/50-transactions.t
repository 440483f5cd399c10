#!/usr/bin/perl
# RFC 3261 transaction layer: retransmission absorption, 100 Trying, final
# response retransmission (UDP), ACK, CANCEL, concurrency.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use SipTest qw(parse_msg wait_until);

sub counting {
    my ($name, $pre, $resp) = @_;
    return "#!/bin/sh\necho \"run \$REQUEST_METHOD\" >> \@VAR\@/$name.count\n$pre\nprintf '$resp'\n";
}
my $contact = 'Contact: <sip:x@127.0.0.1:@SIPPORT@>\\n';

my $t = SipTest->new(scripts => {
    'slow@127.0.0.1'     => counting('slow', '/bin/sleep 1', "SIP/2.0 200 OK\\n$contact\\n"),
    'slow3@127.0.0.1'    => counting('slow3', '/bin/sleep 3', "SIP/2.0 200 OK\\n$contact\\n"),
    'busy@127.0.0.1'     => counting('busy', '', "SIP/2.0 486 Busy Here\\n\\n"),
    'ok@127.0.0.1'       => counting('ok', '', "SIP/2.0 200 OK\\n$contact\\n"),
    'quick@127.0.0.1'    => counting('quick', '', "SIP/2.0 200 OK\\n\\n"),
    'cancelme@127.0.0.1' => counting('cancelme', '/bin/sleep 3.5151', "SIP/2.0 200 OK\\n$contact\\n"),
    'msgcount@127.0.0.1' => counting('msgcount', '', "SIP/2.0 200 OK\\n\\n"),
    'slowmsg@127.0.0.1'  => counting('slowmsg', '/bin/sleep 1', "SIP/2.0 200 OK\\n\\n"),
});
my $port = $t->sip_port;

sub count {
    my $f = $t->var . "/$_[0].count";
    open(my $fh, '<', $f) or return 0;
    my @l = <$fh>;
    return scalar @l;
}
sub uri { "sip:$_[0]\@127.0.0.1:$port" }
sub cid_filter {
    my $cid = shift;
    return sub { my $m = parse_msg($_[0]); ($m->header('call-id') // '') eq $cid };
}
sub msgs { map { [ $_->[0], parse_msg($_->[1]) ] } @_ }

# ---- (a) UDP INVITE retransmissions are absorbed; the script runs once
{
    my $s = $t->udp_socket;
    my $inv = $t->sip_request(method => 'INVITE', uri => uri('slow'), sock => $s);
    my $cid = parse_msg($inv)->header('call-id');
    for (1 .. 3) { $t->udp_send($inv, sock => $s); sleep 0.1 }
    my @got = msgs($t->udp_collect($s, 2.5, filter => cid_filter($cid)));
    my @ok = grep { $_->[1]->code == 200 } @got;
    ok(@ok >= 1, '(a) final 200 received for the retransmitted INVITE')
        or diag('got: ' . join ' ', map { $_->[1]->code } @got);
    is(count('slow'), 1, '(a) script ran exactly once for 3 copies of the INVITE');
    my %tags = map { ($_->[1]->to_tag // '') => 1 } @ok;
    is(scalar(keys %tags), 1, '(a) all 200 copies carry the same To tag');
    my $tag = $ok[0] ? $ok[0][1]->to_tag : undef;
    # same INVITE again after the final response
    $t->udp_send($inv, sock => $s);
    my @again = grep { $_->[1]->code == 200 } msgs($t->udp_collect($s, 1.0, filter => cid_filter($cid)));
    ok(@again >= 1, '(a) INVITE resent after the final: the 200 is sent again');
    is(@again ? $again[0][1]->to_tag : undef, $tag, '(a) ... with the same To tag');
    is(count('slow'), 1, '(a) script still ran only once');
    $t->udp_send($t->ack_for($inv, $ok[0][1], new_branch => 1), sock => $s) if @ok;
}

# ---- (b) 100 Trying for a slow INVITE, none for a quick one
{
    my $s = $t->udp_socket;
    my $inv = $t->sip_request(method => 'INVITE', uri => uri('slow'), sock => $s);
    my $cid = parse_msg($inv)->header('call-id');
    my $t0 = time;
    $t->udp_send($inv, sock => $s);
    my @got;
    while (defined(my $d = $t->udp_recv($s, 3))) {
        my $m = parse_msg($d);
        next unless ($m->header('call-id') // '') eq $cid;
        push @got, [ time - $t0, $m ];
        last if $m->is_final;
    }
    my @codes = map { $_->[1]->code } @got;
    is($codes[0], 100, '(b) first response to a slow INVITE is 100 Trying') or diag("got @codes");
    ok(@got && $got[0][0] <= 0.6, '(b) 100 Trying within 0.6 s (' . sprintf('%.3f', @got ? $got[0][0] : -1) . 's)');
    is($codes[-1], 200, '(b) final 200 after the 100');
    $t->check_mirrored($inv, $got[0][1], '(b) 100 Trying', src_port => $s->sockport) if @got;
    $t->udp_send($t->ack_for($inv, $got[-1][1], new_branch => 1), sock => $s) if @got && $got[-1][1]->is_final;

    $s = $t->udp_socket;
    $inv = $t->sip_request(method => 'INVITE', uri => uri('quick'), sock => $s);
    my @r = $t->udp_req($inv, 3, sock => $s);
    my @qc = map { $_->code } @r;
    is_deeply(\@qc, [200], '(b) INVITE answered at once: no 100 Trying') or diag("got @qc");
    $t->udp_send($t->ack_for($inv, $r[-1], new_branch => 1), sock => $s) if @r;
}

# ---- (c) 486 retransmitted until ACK; ACK absorbed without running a script
{
    my $s = $t->udp_socket;
    my $inv = $t->sip_request(method => 'INVITE', uri => uri('busy'), sock => $s);
    my $cid = parse_msg($inv)->header('call-id');
    my $t0 = time;
    $t->udp_send($inv, sock => $s);
    my @got = msgs($t->udp_collect($s, 2.2, filter => cid_filter($cid)));
    my @f = grep { $_->[1]->code == 486 } @got;
    ok(@f >= 2, '(c) 486 retransmitted while no ACK arrives (' . scalar(@f) . ' copies in 2.2 s)')
        or diag('times: ' . join ' ', map { sprintf '%.2f', $_->[0] } @f);
    if (@f >= 2) {
        my $gap = $f[1][0] - $f[0][0];
        ok($gap >= 0.35 && $gap <= 0.9, sprintf('(c) first retransmission after ~T1 (%.2f s)', $gap));
        is($f[1][1]->raw, $f[0][1]->raw, '(c) retransmission identical to the original');
    }
    if (@f) {
        $t->udp_send($t->ack_for($inv, $f[0][1]), sock => $s);
        my @after = $t->udp_collect($s, 3, filter => cid_filter($cid));
        is(scalar(@after), 0, '(c) after the ACK: no retransmission and no answer to the ACK')
            or diag(join "\n", map { $_->[1] } @after);
        # Confirmed (§17.2.1) until timer I: the engine keeps only a remnant
        # of the transaction (its key), which absorbs a retransmitted ACK
        # and, as figure 7 sends nothing more, a stray INVITE retransmission
        $t->udp_send($t->ack_for($inv, $f[0][1]), sock => $s);
        $t->udp_send($inv, sock => $s);
        my @again = msgs($t->udp_collect($s, 1, filter => cid_filter($cid)));
        is(scalar(@again), 0, '(c) Confirmed: a retransmitted ACK and INVITE are absorbed')
            or diag(join "\n", map { $_->[1]->raw } @again);
        # after timer I (T4 = 5 s) the same INVITE is a new transaction
        $t->udp_collect($s, 4.5, filter => cid_filter($cid));
        $t->udp_send($inv, sock => $s);
        my ($new) = grep { $_->code >= 200 } map { $_->[1] } msgs($t->udp_collect($s, 3, filter => cid_filter($cid)));
        is($new && $new->code, 486, '(c) after timer I the INVITE is new: answered 486 again');
        isnt($new && $new->to_tag, $f[0][1]->to_tag, '(c) ... by a new transaction (a new To tag)');
        $t->udp_send($t->ack_for($inv, $new), sock => $s) if $new;
    }
    is(count('busy'), @f ? 2 : 1, '(c) the ACKs and the retransmission in Confirmed ran no script');
}

# ---- (d) 2xx retransmitted until the (separate) ACK arrives
{
    my $s = $t->udp_socket;
    my $inv = $t->sip_request(method => 'INVITE', uri => uri('ok'), sock => $s);
    my $cid = parse_msg($inv)->header('call-id');
    $t->udp_send($inv, sock => $s);
    my @got = msgs($t->udp_collect($s, 2.2, filter => cid_filter($cid)));
    my @f = grep { $_->[1]->code == 200 } @got;
    ok(@f >= 2, '(d) 200 to INVITE retransmitted until ACK (' . scalar(@f) . ' copies in 2.2 s)');
    if (@f) {
        my $ack = $t->ack_for($inv, $f[0][1], new_branch => 1);
        $t->udp_send($ack, sock => $s);
        my @after = $t->udp_collect($s, 3, filter => cid_filter($cid));
        is(scalar(@after), 0, '(d) after the ACK the 200 is no longer retransmitted')
            or diag(join "\n", map { sprintf('%.2f ', $_->[0]) . $_->[1] } @after);
    }
    # RFC 3050 §5.11.1 (R86): the script answered 200 itself, so its ACK runs it
    ok(wait_until(3, sub { count('ok') >= 2 }), '(d) the ACK for the script\'s own 200 ran the script');
    is(count('ok'), 2, '(d) script ran for the INVITE and once more for its ACK');
    open(my $fh, '<', $t->var . '/ok.count');
    my @runs = $fh ? <$fh> : ();
    is_deeply([map { s/\s+$//r } @runs], ['run INVITE', 'run ACK'], '(d) runs: INVITE then ACK');
}

# ---- (e) a slow script does not block other requests
{
    my $s = $t->udp_socket;
    my $inv = $t->sip_request(method => 'INVITE', uri => uri('slow3'), sock => $s);
    $t->udp_send($inv, sock => $s);
    sleep 0.2;
    for my $i (1 .. 5) {
        my $t0 = time;
        my @r = $t->transact($i % 2 ? 'udp' : 'tcp', method => ($i % 2 ? 'MESSAGE' : 'OPTIONS'),
                             uri => uri('quick'), sock => ($i % 2 ? $t->udp_socket : undef), timeout => 2);
        my $el = time - $t0;
        ok(@r && $r[-1]->code == 200 && $el < 1, sprintf('(e) request %d answered in %.2f s while a slow script runs', $i, $el));
    }
    my @r = map { parse_msg($_) } $t->udp_request($inv, 5, sock => $s, no_drain => 1);
    # the original transaction's answers may already be queued; take the final
    my ($fin) = grep { $_->is_final } @r;
    is($fin && $fin->code, 200, '(e) slow INVITE answered too');
    $t->udp_send($t->ack_for($inv, $fin, new_branch => 1), sock => $s) if $fin;
}

# ---- (f) CANCEL
for my $tr (qw(udp tcp)) {
    my $s = $tr eq 'udp' ? $t->udp_socket : $t->tcp_connect;
    my $inv = $t->sip_request(method => 'INVITE', uri => uri('cancelme'), transport => uc $tr, sock => $s);
    my $im = parse_msg($inv);
    my $cid = $im->header('call-id');
    my $recv = sub {
        my ($timeout) = @_;
        if ($tr eq 'udp') {
            my $d = $t->udp_recv($s, $timeout);
            return defined $d ? parse_msg($d) : undef;
        }
        return $t->read_response($s, $timeout);
    };
    my $send = sub { $tr eq 'udp' ? $t->udp_send($_[0], sock => $s) : $t->send_raw($s, $_[0]) };
    $send->($inv);
    my $prov = $recv->(1.5);
    is($prov && $prov->code, 100, "(f) $tr: 100 Trying before CANCEL");
    (my $cancel = $inv) =~ s/^INVITE /CANCEL /;
    $cancel =~ s/^CSeq: (\d+) INVITE/CSeq: $1 CANCEL/m;
    $cancel =~ s/^Content-Length: \d+\r\n\r\n.*/Content-Length: 0\r\n\r\n/ms;
    my $tc = time;
    $send->($cancel);
    my ($c200, $i487, @other);
    my $end = time + 3;
    while (time < $end && !($c200 && $i487)) {
        my $m = $recv->($end - time) or last;
        next unless ($m->header('call-id') // '') eq $cid;
        if ($m->header('cseq') =~ /CANCEL/ && !$c200) { $c200 = $m }
        elsif ($m->header('cseq') =~ /INVITE/ && $m->is_final && !$i487) { $i487 = [ time - $tc, $m ] }
        else { push @other, $m }
    }
    is($c200 && $c200->code, 200, "(f) $tr: CANCEL answered 200");
    is($c200 && $c200->header('cseq'), '1 CANCEL', "(f) $tr: 200 is for the CANCEL");
    $t->check_mirrored($cancel, $c200, "(f) $tr CANCEL 200", src_port => $s->sockport) if $c200;
    is($i487 && $i487->[1]->code, 487, "(f) $tr: INVITE answered 487 Request Terminated");
    ok($i487 && $i487->[0] < 1.5, "(f) $tr: 487 sent promptly after the CANCEL");
    if ($i487) {
        $send->($t->ack_for($inv, $i487->[1]));
        # the script would answer after 3.5 s: that answer must not be sent
        my @late;
        my $end2 = time + 3.5;
        while (time < $end2) {
            my $m = $recv->($end2 - time) or last;
            push @late, $m if ($m->header('call-id') // '') eq $cid;
        }
        ok(!(grep { $_->code == 200 } @late), "(f) $tr: no 200 for the cancelled INVITE later")
            or diag(join "\n", map { $_->raw } @late);
        ok(!(grep { $_->code == 487 } @late), "(f) $tr: 487 not retransmitted after the ACK") if $tr eq 'udp';
    }
}
{
    my $s = $t->udp_socket;
    my $mark = $t->log_mark;
    my @r = $t->transact('udp', method => 'CANCEL', uri => uri('cancelme'), sock => $s);
    is(@r && $r[-1]->code, 481, '(f) CANCEL without a matching transaction -> 481');
    like($t->log_since($mark), qr/sip: 481 Call\/Transaction Does Not Exist for CANCEL \S+ from 127\.0\.0\.1: CANCEL matches no transaction/,
         '(f) ... and an info line in the error log');
    $mark = $t->log_mark;
    @r = $t->transact('udp', method => 'OPTIONS', uri => uri('nobody'), sock => $s,
                      headers => [ Require => 'no-such-extension' ]);
    is(@r && $r[-1]->code, 420, 'Require of an unknown extension -> 420');
    is(@r && $r[-1]->header('unsupported'), 'no-such-extension', '... with Unsupported naming it');
    like($t->log_since($mark), qr/sip: 420 Bad Extension for OPTIONS .* unsupported extension no-such-extension/,
         '... and an info line in the error log');
}

# ---- (g) non-INVITE retransmission after the final response
{
    my $s = $t->udp_socket;
    my $req = $t->sip_request(method => 'MESSAGE', uri => uri('msgcount'), sock => $s);
    my @r = $t->udp_req($req, 3, sock => $s);
    is(@r && $r[-1]->code, 200, '(g) MESSAGE answered');
    my @r2 = $t->udp_req($req, 2, sock => $s);
    is(@r2 && $r2[-1]->code, 200, '(g) retransmitted MESSAGE: final response sent again');
    is(@r2 && $r2[-1]->to_tag, @r && $r[-1]->to_tag, '(g) ... the same response (same To tag)');
    is(count('msgcount'), 1, '(g) script not re-run for the retransmission');

    # retransmissions while the script still runs
    $req = $t->sip_request(method => 'MESSAGE', uri => uri('slowmsg'), sock => $s);
    my $cid = parse_msg($req)->header('call-id');
    $t->udp_send($req, sock => $s);
    sleep 0.3;  $t->udp_send($req, sock => $s);
    sleep 0.3;  $t->udp_send($req, sock => $s);
    my @got = msgs($t->udp_collect($s, 2, filter => cid_filter($cid)));
    my @fin = grep { $_->[1]->is_final } @got;
    is(scalar(@fin), 1, '(g) one final response for a MESSAGE retransmitted while its script runs');
    is(count('slowmsg'), 1, '(g) slow MESSAGE script ran once');
}

$t->assert_no_zombies;
$t->dump_log_on_failure;
$t->stop;
done_testing;
