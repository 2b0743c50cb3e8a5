"""Amazon SQS on the wire: the JSON 1.0 and Query protocols with SigV4, on the one queue engine.

``sigv4`` (signature checks), ``wire`` (both protocols' codecs), ``errors``
(SQS's error codes, one mapping from the gateway's), ``params`` (a call and
its parameters), ``message_attributes`` and ``queue_attributes`` (SQS's
attribute rules), ``queue_actions`` and ``message_actions`` (the actions),
``auth`` (who a request is) and ``endpoint`` (the HTTP routes).
"""
