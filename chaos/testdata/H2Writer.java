// H2Writer drives H2 (GoCD's embedded database) for the failover scenarios.
//
//   java -cp h2.jar H2Writer.java write DIR   commits numbered rows forever,
//                                             printing "ack N" once row N is
//                                             committed and synced
//   java -cp h2.jar H2Writer.java check DIR N prints "ok COUNT" when rows
//                                             1..N are all there, then writes
//                                             a row of its own
//
// H2 does not fsync on commit by default: after each commit the writer runs
// CHECKPOINT SYNC, so an acknowledged row is durable as far as H2 can make
// it. What brick promises is tested, not what H2 leaves in a page cache.
import java.sql.*;

public class H2Writer {
    public static void main(String[] args) throws Exception {
        String url = "jdbc:h2:file:" + args[1] + "/gocd;DB_CLOSE_ON_EXIT=FALSE";
        try (Connection c = DriverManager.getConnection(url, "sa", "")) {
            c.setAutoCommit(false);
            try (Statement s = c.createStatement()) {
                s.execute("CREATE TABLE IF NOT EXISTS pipelines(id BIGINT PRIMARY KEY, name VARCHAR(200) NOT NULL)");
                c.commit();
            }
            if (args[0].equals("write")) {
                write(c);
            } else {
                check(c, Long.parseLong(args[2]));
            }
        }
    }

    static void write(Connection c) throws Exception {
        try (PreparedStatement p = c.prepareStatement("INSERT INTO pipelines(id, name) VALUES(?, ?)");
             Statement s = c.createStatement()) {
            for (long i = 1; ; i++) {
                p.setLong(1, i);
                p.setString(2, "pipeline-" + i + "-" + "x".repeat(100));
                p.executeUpdate();
                c.commit();
                s.execute("CHECKPOINT SYNC");
                System.out.println("ack " + i);
                System.out.flush();
            }
        }
    }

    static void check(Connection c, long acked) throws Exception {
        try (Statement s = c.createStatement()) {
            ResultSet r = s.executeQuery("SELECT COUNT(*) FROM pipelines WHERE id <= " + acked);
            r.next();
            long n = r.getLong(1);
            s.executeUpdate("INSERT INTO pipelines(id, name) VALUES(1000000000, 'written after failover')");
            c.commit();
            s.execute("CHECKPOINT SYNC");
            System.out.println("ok " + n);
        }
    }
}
