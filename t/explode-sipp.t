#!/usr/bin/perl
# The docs/explode.md example: one MESSAGE (RFC 5365, Require:
# recipient-list-message) and one EXPLODE sent through the exploder reach
# three sipp phones (t/sipp/explode-uas.xml, UDP, distinct ports), each
# exactly once.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use SipTest qw(free_port);
use SipExplodeTest qw(resource_lists sipfrag);

my $t = SipExplodeTest->new(users => { alice => 'wonderland' },
                            consent => "sip:phone*\@127.0.0.1 alice\n");
exit 1 unless $t->sipp_available;

for my $kind (qw(message explode)) {
    subtest "$kind to three sipp phones" => sub {
        my @ph = map { $t->sipp_start(name => "$kind-phone$_", sf => 'explode-uas.xml', m => 1) } 1 .. 3;
        my @uris = map { "sip:phone$_\@127.0.0.1:$ph[$_ - 1]{port}" } 1 .. 3;
        my $res = $t->explode(kind => $kind, transport => 'udp',
                              build => { list => resource_lists(entries => [ map { { uri => $_, copy => 'to' } } @uris ]),
                                         text => 'Hello phones.',
                                         template => sipfrag(body => 'Hello phones.') });
        is($res->{final} && $res->{final}->code, $kind eq 'message' ? 202 : 200, 'accepted');
        for my $i (0 .. 2) {
            $t->sipp_ok($ph[$i], calls => 1, timeout => 15, label => "phone" . ($i + 1));
            my @m = SipTest::sipp_msgs($ph[$i], dir => 'received', method => 'MESSAGE');
            is(scalar @m, 1, 'phone' . ($i + 1) . ' received exactly one MESSAGE');
            is($m[0] && $m[0]->uri, $uris[$i], 'addressed to it');
            like($m[0] ? $m[0]->body : '', qr/Hello phones\./, 'with the text');
        }
    };
}
$t->stop;
done_testing;
