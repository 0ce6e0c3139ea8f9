"""Drop-in capture: the PostHog and Segment SDKs send to Lodestar unchanged.

``bodies`` reads each SDK's request encodings, ``posthog`` and ``segment`` turn their
messages into Lodestar's native events, identity links, traits and catalog rows
(``mapping`` holds what the two share), ``apis`` answers with the status codes the SDKs'
retry logic expects, and ``ingestion.services.ingest_capture`` stores it all.
"""
