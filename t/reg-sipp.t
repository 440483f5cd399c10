#!/usr/bin/perl
# Registrar with SIPp as the registering UAC (t/sipp/reg-uac-cycle.xml), over
# UDP (-t u1) and TCP (-t t1): add several bindings, refresh (same Call-ID,
# higher CSeq), too brief -> 423 + Min-Expires, out-of-order CSeq -> 500,
# remove one (expires=0), Contact: * with Expires: 0, fetch (no Contact).
# The scenario checks codes and the presence/absence of contacts itself;
# here the exact Contact lists (uri, expires, q) come from sipp's message
# trace.  Three calls (= three addresses-of-record) per transport.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time);
use SipRegTest;

SipRegTest::sipp_present() or do { done_testing; exit 1 };

my $t = SipRegTest->new;
my $port = $t->sip_port;
my $calls = 3;

for my $tr (qw(u1 t1)) {
    my $TR = $tr eq 't1' ? 'TCP' : 'UDP';
    my $svc = "cyc$tr";
    my $t0 = time;
    my $h = $t->rsipp_start(name => "cycle-$tr", sf => 'reg-uac-cycle.xml', transport => $tr,
                            m => $calls, r => 10, service => $svc, remote => "127.0.0.1:$port");
    $t->rsipp_ok($h, calls => $calls, label => "sipp REGISTER cycle over $TR");
    note(sprintf "sipp cycle over %s: %.1fs", $TR, time - $t0);

    my @trace = SipRegTest::rsipp_trace($h);
    my %by_cid;
    push @{ $by_cid{ $_->{msg}->header('call-id') // '' } }, $_ for @trace;
    is(scalar(keys %by_cid), $calls, "$TR: trace holds $calls Call-IDs");

    for my $cid (sort keys %by_cid) {
        my @e = @{ $by_cid{$cid} };
        my ($first) = grep { $_->{dir} eq 'sent' } @e;
        my ($user) = ($first->{msg}->header('to') // '') =~ /<sip:([^@]+)@/;
        $user //= '?';
        my ($n) = $user =~ /-(\d+)$/;
        my $lp = $h->{port};
        my %u = map { $_ => "sip:$user-$_\@127.0.0.1:$lp;transport=$TR" } qw(a b c d);

        # each REGISTER (retransmissions skipped) and its first final response
        my (@steps, %seen);
        for my $s (grep { $_->{dir} eq 'sent' && !$_->{msg}->is_response } @e) {
            my $br = SipTest::Msg::params_of($s->{msg}->header('via'))->{branch} // '';
            next if $seen{$br}++;
            my ($resp) = grep {
                $_->{dir} eq 'received' && $_->{msg}->is_final
                    && (SipTest::Msg::params_of($_->{msg}->header('via'))->{branch} // '') eq $br
            } @e;
            push @steps, [ $s->{msg}, $resp && $resp->{msg} ];
        }
        my $L = "$TR $user";
        is(scalar(@steps), 8, "$L: 8 REGISTER transactions") or next;

        my @want = (
            [ 1, 200, { $u{a} => [ 599, 600, '1' ], $u{b} => [ 599, 600, '0.5' ], $u{c} => [ 899, 900, '0.8' ] },
              'add a, b (Expires 600, b q=0.5) and c (expires=900;q=0.8)' ],
            [ 2, 200, { $u{a} => [ 1199, 1200, '1' ], $u{b} => [ 597, 600, '0.5' ], $u{c} => [ 897, 900, '0.8' ] },
              'refresh a to 1200, b and c unchanged' ],
            [ 3, 423, undef, 'd (3600) + b with expires=30' ],
            [ 2, 500, undef, 'CSeq 2 again (not higher)' ],
            [ 4, 200, { $u{a} => [ 1195, 1200, '1' ], $u{c} => [ 895, 900, '0.8' ] },
              'remove b: a and c left (a not changed by the 500, d not added by the 423)' ],
            [ 5, 200, { $u{a} => [ 1195, 1200, '1' ], $u{c} => [ 895, 900, '0.8' ] }, 'fetch: a and c' ],
            [ 6, 200, {}, 'Contact: * with Expires: 0: nothing left' ],
            [ 7, 200, {}, 'fetch: nothing' ],
        );
        for my $i (0 .. $#want) {
            my ($cseq, $code, $bind, $what) = @{ $want[$i] };
            my ($req, $resp) = @{ $steps[$i] };
            my ($rc) = ($req->header('cseq') // '') =~ /^(\d+)/;
            is($rc, $cseq, "$L step " . ($i + 1) . ": CSeq $cseq");
            is($resp && $resp->code, $code, "$L step " . ($i + 1) . " ($what) -> $code");
            next unless $resp;
            if ($code == 423) {
                is($resp->header('min-expires'), '60', "$L: 423 has Min-Expires: 60");
            }
            if ($bind) {
                SipRegTest::bindings_are({ SipRegTest::binding_map($resp) }, $bind,
                                         "$L step " . ($i + 1) . ": exact Contact list", $resp);
                ok(defined $resp->header('date'), "$L step " . ($i + 1) . ": Date header");
            }
        }

        # and the server agrees afterwards: no binding, the user answers 480
        my ($f, %b) = $t->fetch($user);
        is($f && $f->code, 200, "$L: REGISTER without Contact afterwards -> 200");
        is(scalar(keys %b), 0, "$L: no binding left") or diag(SipRegTest::dump_contacts($f));
        my $m = $t->request_to($user);
        is($m && $m->code, 480, "$L: MESSAGE to the user -> 480 (registered, no binding left)");
    }
}

ok($t->options_ok('udp') && $t->options_ok('tcp'), 'server still answers OPTIONS over UDP and TCP');
$t->dump_log_on_failure;
$t->stop;
done_testing;
