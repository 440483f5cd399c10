#!/usr/bin/perl
# Routing without scripts (docs/routing.md, "Where the rules run"): the
# order of steps 0a-0c on one server.  Lists (0a) answer before any rule;
# name mapping (0b) rewrites the Request-URI before the rules (0c), so a
# <Location> of the canonical user and a SipRuleFile line on the
# Request-URI apply to a call dialled by name, while a line on the To
# header sees what the caller wrote.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use SipCgiTest qw(parse_msg rand_token wait_until);
use SipTest qw(free_port);

my ($ann, $bob, $desk) = map { free_port() } 1 .. 3;
my $t = SipCgiTest->new(
    start => 0,
    vhost_conf => join("\n",
        'SipNameMap file @DIR@/names',
        "SipList team sip:ann\@127.0.0.1:$ann sip:bob\@127.0.0.1:$bob",
        'LogFormat "%{Call-ID}i %>s" steps',
        'CustomLog @DIR@/logs/jqp.log steps env=sip-rule-log',
        'CustomLog @DIR@/logs/to.log steps env=to-jqp',
        'SipRuleFile @DIR@/steps.rules',
        '<Location "/jqp@127.0.0.1">',
        "    SipRule respond 302 sip:desk\@127.0.0.1:$desk",
        '</Location>'));
sub spew {
    my ($name, $text) = @_;
    open(my $fh, '>', $t->dir . "/$name") or die "$name: $!";
    print $fh $text;
    close $fh;
    chmod 0644, $t->dir . "/$name";
}
spew('names', "# user First [Middle] Last\njqp John Q Public\njdoe John Doe\n");
spew('steps.rules', join('',
    "# the canonical user, whatever was dialled\n",
    "Request-URI INVITE jqp\@127.0.0.1 log\n",
    "# what the caller wrote in To\n",
    "To INVITE jqp\@127.0.0.1 log to-jqp\n",
    "# would refuse the list if the rules came first\n",
    "Request-URI INVITE team\@127.0.0.1 403\n",
    "To INVITE team\@127.0.0.1 403\n"));
$t->start;
my $port = $t->sip_port;
my $uac = $t->peer(name => 'caller');

sub call {
    my ($user, %o) = @_;
    my $cid = $o{call_id} // rand_token(12) . '@steps';
    my $raw = $uac->request(method => 'INVITE', uri => "sip:$user\@127.0.0.1:$port", call_id => $cid,
                            from => '<sip:alice@127.0.0.1>;tag=' . rand_token(8),
                            to => $o{to} // "<sip:$user\@127.0.0.1>");
    my $fin = $uac->expect(call_id => $cid, final => 1, timeout => 5);
    $uac->ack($raw, $fin) if $fin && $fin->code >= 300;
    return ($fin, $cid);
}
sub logged {
    my ($file, $cid) = @_;
    my $hit;
    wait_until(3, sub {
        open(my $fh, '<', $t->dir . "/logs/$file") or return 0;
        $hit = grep { /^\Q$cid\E / } <$fh>;
        return $hit;
    });
    return $hit;
}

# 0b before 0c: dialled by name, ruled as the canonical user
for my $dialled (qw(John.Q.Public JPublic johnqpublic)) {
    my ($r, $cid) = call($dialled);
    is($r && $r->code, 302, "$dialled: mapped to jqp, then jqp's <Location> rule answers 302");
    like($r ? $r->header('contact') // '' : '', qr/^<sip:desk\@127\.0\.0\.1:$desk>/, "$dialled: Contact from the rule");
    ok(logged('jqp.log', $cid), "$dialled: the Request-URI line saw jqp (logged)");
    ok(!logged('to.log', $cid), "$dialled: the To line saw what was dialled (not logged)");
}
{
    my ($r, $cid) = call('jqp');
    is($r && $r->code, 302, 'jqp itself: 302');
    ok(logged('to.log', $cid), 'jqp itself: the To line matches');
}

# several candidates: answered by name mapping, no rule runs
{
    my ($r, $cid) = call('john');
    is($r && $r->code, 300, 'john: two people, 300 from name mapping');
    my @c = $r ? $r->header_elems('contact') : ();
    is(join(' ', sort map { /<sip:(\w+)\@/ ? $1 : $_ } @c), 'jdoe jqp', 'john: a Contact per candidate');
    ok(!logged('jqp.log', $cid), 'john: no rule ran');
}

# 0a before 0c: the list answers though two rules would refuse it
{
    my ($r, $cid) = call('team');
    is($r && $r->code, 300, 'team: the list answers 300 before the rules that would refuse it');
    my @c = $r ? $r->header_elems('contact') : ();
    is(join(' ', map { /<sip:(\w+)\@/ ? $1 : $_ } @c), 'ann bob', 'team: its members, in order');
}

$t->stop;
done_testing;
