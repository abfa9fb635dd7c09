"""First names for generated puzzles.

The first 51 are the names the Logic-RL / mem-kk-logic data uses; the rest are other common first
names. All are single capitalised words that are not English words the puzzle wording uses (no
"Will", "Faith", "June"), so a name can never be mistaken for part of a statement.
"""

COMMON_NAMES: tuple[str, ...] = (
    # Logic-RL's names
    "Abigail", "Aiden", "Alexander", "Amelia", "Aria", "Aurora", "Ava", "Avery", "Benjamin",
    "Charlotte", "Chloe", "Daniel", "David", "Elizabeth", "Ella", "Emily", "Emma", "Ethan", "Evelyn",
    "Grace", "Harper", "Henry", "Isabella", "Jack", "Jackson", "Jacob", "James", "Joseph", "Liam",
    "Lily", "Logan", "Lucas", "Luke", "Mason", "Matthew", "Mia", "Michael", "Noah", "Oliver", "Olivia",
    "Owen", "Penelope", "Riley", "Samuel", "Scarlett", "Sebastian", "Sofia", "Sophia", "Victoria",
    "William", "Zoey",
    # more common first names
    "Aaron", "Adam", "Alice", "Andrew", "Anna", "Anthony", "Caleb", "Carter", "Clara", "Daisy",
    "Dylan", "Eleanor", "Eli", "Elijah", "Ezra", "Gabriel", "Hannah", "Hazel", "Isaac", "Isla",
    "Jasper", "Julian", "Layla", "Leah", "Leo", "Levi", "Lucy", "Maya", "Nathan", "Nora", "Oscar",
    "Paisley", "Quinn", "Rachel", "Ruby", "Ryan", "Sadie", "Sarah", "Stella", "Theo", "Thomas",
    "Violet", "Wyatt", "Xavier", "Yara", "Zachary", "Zara", "Naomi", "Miles", "Felix",
)
