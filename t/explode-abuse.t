#!/usr/bin/perl
# URI-list service abuse (issue 14, docs/explode.md): no or wrong
# credentials, huge lists, duplicates, malformed XML and sipfrag, lists
# pointing at the server, EXPLODE templates, external list= URLs, the rate
# limit, consent, and the mod_status counters moving by exactly that.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use SipExplodeTest qw(resource_lists sipfrag parse_msg);
use IO::Socket::INET;
use IO::Select;
use Time::HiRes qw(time sleep);

my $t = SipExplodeTest->new(consent => "sip:*\@127.0.0.1 *\n",
                            vhost => ['SipLimitRequestBody 1048576', 'SipExplodeRate 30']);
my $port = $t->sip_port;
my $engine = $t->engine_pid;
ok($engine, "engine pid $engine");

sub try {
    my (%o) = @_;
    my @peers = map { $t->peer_for($o{tr} // 'udp', name => $_) } @{ $o{names} || ['bill'] };
    my $list = $o{list} // resource_lists(entries => [ map { $_->uri } @peers ]);
    my $res = $t->explode(transport => $o{tr} // 'udp', no_auth => $o{no_auth}, user => $o{user},
                          password => $o{password}, timeout => $o{timeout},
                          build => { list => $list, %{ $o{build} || {} } });
    $t->serve(\@peers, secs => $o{serve} // 1.5);
    my $n = 0;
    $n += scalar(my @g = $t->requests($_)) for @peers;
    return ($res->{final} ? $res->{final}->code : 'none', $n, $res, \@peers);
}
sub alive {
    my ($label) = @_;
    ok($t->options_ok('udp'), "$label: a normal OPTIONS still answered");
    is($t->engine_pid, $engine, "$label: engine pid unchanged");
}

my $c0 = $t->counters;
my ($code, $n, $res) = try(no_auth => 1, names => [qw(bill joe ted)], serve => 3);
is($code, 401, 'no credentials: 401');
is($n, 0, 'no credentials: zero requests at any peer after 3 s');
($code, $n) = try(password => 'wrong', serve => 2);
is($code, 401, 'wrong password: 401 again');
is($n, 0, 'wrong password: nothing sent');

my $huge = resource_lists(entries => [ map { "sip:u$_\@127.0.0.1:9" } 1 .. 10000 ]);
($code, $n) = try(tr => 'tcp', list => $huge, serve => 2, timeout => 10);
is($code, 403, '10 000 entries (SipLimitRequestBody raised): 403');
is($n, 0, '10 000 entries: nothing sent');
alive('after 10 000 entries');

my ($c, $cnt);
{
    my $bob = $t->peer(name => 'bob');
    ($code) = try(names => [], list => resource_lists(entries => [ ($bob->uri) x 50 ]));
    $t->serve([$bob], secs => 1.5);
    is($code, 200, 'the same target 50 times: 200');
    is(scalar(my @g = $t->requests($bob)), 1, 'the same target 50 times: one request');
}

($code, $n) = try(list => '<resource-lists><list><entry uri="sip:x@127.0.0.1"></list>');
is($code, 400, 'malformed XML: 400');
is($n, 0, 'malformed XML: nothing sent');
alive('malformed XML');
($code, $n) = try(build => { template => "MESSAGE\r\nContent-Length: 99\r\n\r\nxx" });
is($code, 400, 'malformed sipfrag: 400');
is($n, 0, 'malformed sipfrag: nothing sent');
alive('malformed sipfrag');

{
    my $mark = $t->log_mark;
    my $bill = $t->peer(name => 'bill');
    ($code) = try(names => [], list => resource_lists(entries => [ $bill->uri, "sip:127.0.0.1:$port",
                  $t->exploder_uri, $t->exploder_uri . ';list=cid:lst1%40client.example.org' ]));
    $t->serve([$bill], secs => 1.5);
    is($code, 200, 'a list pointing at the server and the exploder: 200 for the rest');
    is(scalar(my @g = $t->requests($bill)), 1, 'bill one request');
    ok($t->wait_log($mark, qr/dropped \(it points at this server itself\)/, 3), 'server entry dropped, logged');
    ok($t->wait_log($mark, qr/dropped \(it would explode again\)/, 3), 'exploder entries dropped, logged');
    my @loops = $t->log_lines($mark, qr/sip explode: alice .* EXPLODE via/);
    is(scalar @loops, 0, 'no second-level EXPLODE was ever sent');
}

($code, $n) = try(build => { template => sipfrag(method => 'EXPLODE') });
is($code, 403, 'template EXPLODE: 403');
is($n, 0, 'template EXPLODE: nothing sent');

{
    my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp', Listen => 5) or die;
    my $hp = $l->sockport;
    ($code, $n) = try(build => { list_param => "http://127.0.0.1:$hp/list.xml" });
    is($code, 403, 'list=http://...: 403');
    is($n, 0, 'list=http://...: nothing sent');
    ok(!IO::Select->new($l)->can_read(1), 'no HTTP fetch: the listener got no connection');
}

{
    my $u = SipExplodeTest->new(vhost => ['SipExplodeRate 2']);
    my $old = $t; $t = $u;
    my @codes = map { (try())[0] } 1 .. 3;
    is_deeply(\@codes, [ 200, 200, 403 ], 'SipExplodeRate 2: the third in a minute 403');
    $u->stop; $t = $old;
}

{
    my $u = SipExplodeTest->new(consent => "sip:bill\@127.0.0.1 *\nsip:joe\@127.0.0.1 *\n");
    my $old = $t; $t = $u;
    my ($code, $n, $res) = try(names => [qw(bill joe ted)], serve => 2);
    is($code, 470, 'consent missing for one of three: 470');
    like($res->{final}->header('permission-missing') // '', qr/^<sip:ted\@127\.0\.0\.1:\d+>$/, 'Permission-Missing: <ted>');
    is($n, 0, 'zero requests');
    $u->stop; $t = $old;
}

# what happened on $t since $c0: explosions 2 (50x bob, server/exploder
# list), requests 2, refused: 10 000, XML, sipfrag, EXPLODE template, http = 5
my $c1 = $t->counters;
is($c1->{SipExplosions} - $c0->{SipExplosions}, 2, 'SipExplosions +2');
is($c1->{SipExplodeRequests} - $c0->{SipExplodeRequests}, 2, 'SipExplodeRequests +2');
is($c1->{SipExplodeRefused} - $c0->{SipExplodeRefused}, 5, 'SipExplodeRefused +5');
is($c1->{SipExplodeConsentRefused} - $c0->{SipExplodeConsentRefused}, 0, 'SipExplodeConsentRefused +0');
$t->stop;

# default body limit: 413
my $d = SipExplodeTest->new;
$t = $d;
($code, $n) = try(tr => 'tcp', list => $huge, serve => 1, timeout => 10);
is($code, 413, '10 000 entries with the default SipLimitRequestBody: 413');
is($n, 0, 'nothing sent');
$d->stop;
$t = undef;
done_testing;
