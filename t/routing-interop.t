#!/usr/bin/perl
# Routing without scripts (issue 15, docs/routing.md) with peers nobody
# here wrote: a SIPp UAC calls sip:sales@<mod_sip>, a rule proxies the call
# to a SIPp UAS (sip:desk@127.0.0.1:<port>), and the whole call INVITE /
# 180 / 200 / ACK / BYE / 200 goes through.  Twice: the rule as SipRule in
# <Location>/<If>, and as a line of a SipRuleFile.  The ACK and the BYE
# are in-dialog requests: they follow the proxy's Record-Route, not the
# rules (a rule refusing BYE for the same user does not touch them).
# Over UDP, and over TCP end to end.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use SipTest qw(free_port wait_until);

SipTest::sipp_available() or do { done_testing; exit 1 };

for my $run ([sections => 'u1'], [file => 'u1'], [sections => 't1']) {
    my ($form, $tr) = @$run;
    my $TR = $tr eq 't1' ? 'TCP' : 'UDP';
    my $uport = free_port();
    my $desk = "sip:desk\@127.0.0.1:$uport" . ($tr eq 't1' ? ';transport=tcp' : '');
    my $rules = $form eq 'sections'
        ? join("\n",
            '<Location "/sales@127.0.0.1">',
            '    <If "%{REQUEST_METHOD} == \'INVITE\'">',
            '        SipRule log',
            "        SipRule proxy $desk",
            '    </If>',
            '    <ElseIf "%{REQUEST_METHOD} == \'BYE\'">',
            '        SipRule respond 403',
            '    </ElseIf>',
            '</Location>')
        : 'SipRuleFile @DIR@/interop.rules';
    my $t = SipTest->new(
        start => 0,
        vhost_conf => join("\n",
            'LogFormat "%{Call-ID}i %>s \\"%r\\"" calls',
            'CustomLog @DIR@/logs/calls.log calls env=sip-rule-log',
            $rules));
    open(my $fh, '>', $t->dir . '/interop.rules') or die "interop.rules: $!";
    print $fh "# calls to sales go to the desk\n",
              "To INVITE sales\@127.0.0.1 log\n",
              "To INVITE sales\@127.0.0.1 proxy $desk\n",
              "To BYE sales\@127.0.0.1 403\n";
    close $fh;
    chmod 0644, $t->dir . '/interop.rules';
    $t->start;
    my $port = $t->sip_port;

    my $uas = $t->sipp_start(name => "uas-$form-$tr", sf => 'reg-uas-call.xml', port => $uport, m => 2, d => 200,
                             transport => $tr);
    my $uac = $t->sipp_start(name => "uac-$form-$tr", sf => 'reg-uac-call.xml', m => 2, r => 5, transport => $tr,
                             service => 'sales', remote => "127.0.0.1:$port");
    $form = "$form/$TR";
    $t->sipp_ok($uac, calls => 2, label => "$form: sipp UAC, 2 calls to sales");
    $t->sipp_ok($uas, calls => 2, label => "$form: sipp UAS (the desk)");

    my @inv = SipTest::sipp_msgs($uas, dir => 'received', method => 'INVITE');
    is(scalar @inv, 2, "$form: the desk got both INVITEs (no retransmission)");
    my $inv = $inv[0];
    is($inv && $inv->uri, $desk, "$form: Request-URI: the rule's target");
    like($inv ? $inv->header('to') // '' : '', qr/^<sip:sales\@127\.0\.0\.1:$port>$/, "$form: To unchanged");
    is($inv && $inv->header('max-forwards'), '69', "$form: Max-Forwards decremented");
    my @via = $inv ? $inv->header_elems('via') : ();
    ok(@via == 2 && $via[0] =~ m{^SIP/2\.0/$TR 127\.0\.0\.1:$port;branch=z9hG4bK}, "$form: our Via on top of the UAC's")
        or diag(join "\n", @via);
    like(join(',', $inv ? $inv->headers('record-route') : ()), qr/^<sip:127\.0\.0\.1:$port(;transport=tcp)?;lr[;>]/,
         "$form: the proxy records the route");
    for my $m (qw(ACK BYE)) {
        my @r = SipTest::sipp_msgs($uas, dir => 'received', method => $m);
        is(scalar @r, 2, "$form: the desk got the ${m}s");
        ok(@r && ($r[0]->header_elems('via'))[0] =~ m{127\.0\.0\.1:$port;}, "$form: the $m came through the proxy")
            or diag(@r ? $r[0]->head : "no $m");
        is($r[0] && $r[0]->uri, 'sip:callee@127.0.0.1:' . $uport . ";transport=$TR",
           "$form: the $m goes to the desk's Contact (the remote target), not through the rules");
    }
    my @codes = map { $_->code } SipTest::sipp_msgs($uac, dir => 'received', cseq_method => 'BYE');
    ok(@codes && !grep({ $_ != 200 } @codes), "$form: BYE answered 200 by the desk, not 403 by the rule")
        or diag("BYE answers: @codes");

    # the log rule marked each INVITE for the CustomLog
    my %cid = map { ($_->header('call-id') // '') => 1 } @inv;
    my $log = $t->dir . '/logs/calls.log';
    my @lines;
    ok(wait_until(3, sub { open(my $l, '<', $log) or return 0; @lines = <$l>; @lines >= 2 }),
       "$form: the calls are in the rule's CustomLog");
    is(scalar(grep { my ($c, $s) = split / /; $cid{$c} && $s == 200 && /"INVITE / } @lines), 2,
       "$form: one line with status 200 per INVITE");
    ok(!(grep { /"(?:BYE|ACK) / } @lines), "$form: no line for the in-dialog requests");
    $t->stop;
}

done_testing;
