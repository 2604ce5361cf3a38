"""Demo organisation shared by ``seed_demo`` and ``serve`` (which prints the logins)."""

from portal.choices import Role

DEMO_PASSWORD = "demo-portal-2026"

REGIONS = [("NORTH", "North region"), ("SOUTH", "South region")]
# code, city, region
STORES = [
    ("LIL", "Lille", "NORTH"),
    ("ROU", "Rouen", "NORTH"),
    ("AMI", "Amiens", "NORTH"),
    ("REI", "Reims", "NORTH"),
    ("LYO", "Lyon", "SOUTH"),
    ("MAR", "Marseille", "SOUTH"),
    ("NIC", "Nice", "SOUTH"),
    ("TOU", "Toulouse", "SOUTH"),
]

# username, first name, last name, entity code, role
USERS = [
    ("marketer", "Maya", "Martin", "HQ", Role.CENTRAL_MARKETER),
    ("approver", "Adam", "Bernard", "HQ", Role.CENTRAL_APPROVER),
    ("north", "Nina", "Petit", "NORTH", Role.LOCAL_OPERATOR),
    ("lille", "Louis", "Durand", "LIL", Role.LOCAL_OPERATOR),
    ("lille.boss", "Lea", "Moreau", "LIL", Role.LOCAL_APPROVER),
    ("lyon", "Yanis", "Laurent", "LYO", Role.LOCAL_OPERATOR),
    ("lyon.boss", "Chloe", "Simon", "LYO", Role.LOCAL_APPROVER),
    ("marseille", "Manon", "Michel", "MAR", Role.LOCAL_OPERATOR),
]


def login_lines(site_url: str) -> list[str]:
    lines = [
        f"Portal:  {site_url}/",
        f"Admin:   {site_url}/admin/",
        f"Logins (password: {DEMO_PASSWORD}):",
        "  admin               superuser",
    ]
    for username, first, last, entity, role in USERS:
        lines.append(f"  {username:<20}{role.label} of {entity} ({first} {last})")
    return lines
