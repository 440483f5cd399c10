#!/usr/bin/perl
# t/cgi-services.t again with every SIP-CGI run carried to a resident
# FastCGI worker pool (SIP_CGI_FCGI, t/lib/SipCgiTest.pm; issue 18).
use strict;
use warnings;
use FindBin;
$ENV{SIP_CGI_FCGI} = 1;
my $file = "$FindBin::Bin/cgi-services.t";
do $file;
die $@ if $@;
