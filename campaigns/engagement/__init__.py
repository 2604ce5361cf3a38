"""Engagement and compliance: unsubscribe links and headers (RFC 8058), the preference page,
SMS STOP replies, sender identity per entity and the mirror page ("view in browser")."""
