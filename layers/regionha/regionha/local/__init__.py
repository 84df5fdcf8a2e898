"""The local runtime: the cloud's addresses on loopback, its network cuts as silent drops, its nodes as
tiny HTTP servers, and a reconciler that applies the AWS-side state (read from a moto server) to them.
"""

from regionha.local.aws import route53 as _route53

# Route 53 change batches validated as AWS does (moto accepts a stale DELETE and a duplicate CREATE).
_route53.install()
