from kirby.models import Environment


def test_database_migrates_and_stores(db):
    with db.session() as session:
        session.add(Environment(name="dev", description="Development"))
    with db.session() as session:
        assert [e.name for e in session.query(Environment)] == ["dev"]
