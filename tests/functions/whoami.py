"""Describes its execution environment: pid (warm reuse), context and configured environment variables."""

import os


def handler(event, context):
    return {
        "pid": os.getpid(),
        "function_name": context.function_name,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "invoked_function_arn": context.invoked_function_arn,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "greeting": os.environ.get("GREETING"),
        "region": os.environ.get("AWS_REGION"),
    }
